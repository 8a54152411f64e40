#!/usr/bin/env python
"""Ray's overhead on one box: photos/s of `imgsearch index --engine ray` vs the plain `imgsearch index`.

Generates N camera-like 12-MP JPEGs (bench/index_throughput.generate_photos, not timed; reused between runs),
then, each in a fresh process and a fresh library, with the shipped checkpoint on the CPU:

  plain   imgsearch index FOLDER --json                                   (DataLoader decode workers)
  ray     imgsearch index FOLDER --engine ray --out RUN_DIR --json        (a local Ray instance started by the
          command: ray.init, the Ray Data job — decode tasks + one captioning actor —, then the ingest)

Wall time is the whole command (imports, model load, Ray start-up included); the Ray rows also split out the
job and the ingest (ClusterReport.job_seconds / ingest_seconds). Runs alternate (plain, ray, plain, ray, ...)
so a busy box slows both alike; the load average is recorded.

    python bench/ray_index.py                  # 240 JPEGs, 1 round
    python bench/ray_index.py --n 24 --rounds 1     # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results"

from index_throughput import generate_photos, machine  # noqa: E402


def run(cmd: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return wall, json.loads(p.stdout)


def ingest_rate(n: int, work: Path) -> dict:
    """Rows/s of ``imgsearch ingest`` alone: ``n`` small distinct files on disk and a synthetic shard of ``n``
    described rows (random vectors, 3 captions, 6 tags, 12.6 KB of cells: the sizes of a real row) into an empty
    library, in this process (plan + ingest + search-cache update, as Library.ingest does it)."""
    import numpy as np
    import pyarrow.parquet as pq

    from imgsearch import Library
    from imgsearch.cluster import plan as cplan, shards

    rng = np.random.default_rng(0)
    pics = work / "ingest-pics"
    pics.mkdir(parents=True)
    rows = []
    words = "a dog cat man woman runs on the grass beach red blue ball water".split()
    version = "synthetic-000000000000+cells"
    for i in range(n):
        p = pics / f"d{i // 1000:03d}" / f"p{i:07d}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"\xff\xd8" + i.to_bytes(8, "little") * 16)
        st = p.stat()
        info = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "content_hash": f"{i:064x}", "width": 4000,
                "height": 3000, "taken_at": None, "gps": None}
        caps = [(" ".join(rng.choice(words, 7)), -float(k)) for k in range(3)]
        tags = [(str(w), 0.5) for w in rng.choice(words, 6, replace=False)]

        class D:   # what Captioner.describe returns, the fields the shard row takes
            captions, keywords, region_tags = caps, [w for w, _ in tags], tags[:2]
            image_embedding, label_embedding, visual_embedding = (rng.standard_normal(384, dtype=np.float32)
                                                                  for _ in range(3))
            cells, labels = rng.bytes(12_600), rng.bytes(40)
        D.tags = tags
        base = {"path": str(p), "reason": "new", "photo_id": None, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "model_version": version}
        rows.append(shards.described_row(base, info, D, rng.standard_normal(384, dtype=np.float32), "labels-v"))
    run = work / "ingest-run"
    (run / "shards" / "a").mkdir(parents=True)
    for k in range(0, n, 10_000):
        pq.write_table(shards.to_table(rows[k:k + 10_000]), run / "shards" / "a" / f"{k:08d}.parquet")
    cplan.write_run(run, [str(pics)], version, "")
    del rows
    with Library(work / "ingest-lib" / "library.db") as lib:
        t0 = time.monotonic()
        rep = lib.ingest(run)
        wall = time.monotonic() - t0
    assert rep.added == n, rep.to_dict()
    return {"rows": n, "wall_s": round(wall, 2), "rows_per_s": round(n / wall, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="camera-size JPEGs")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--photos", type=Path, default=Path(tempfile.gettempdir()) / "imgsearch-bench-ray-photos")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray_index.txt")
    ap.add_argument("--ingest-rows", type=int, default=20_000, help="synthetic shard rows for the ingest rate (0: skip)")
    a = ap.parse_args(argv)

    m = machine(with_torch=False)
    import ray

    folder = a.photos / f"n{a.n}"
    generate_photos(folder, a.n, 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    exe = [shutil.which("imgsearch") or "imgsearch"]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="imgsearch-bench-ray-"))
    try:
        for r in range(a.rounds):
            for engine in ("plain", "ray"):
                lib = work / f"{engine}{r}" / "library.db"
                cmd = exe + ["index", str(folder), "--db", str(lib), "--json"]
                if engine == "ray":
                    cmd += ["--engine", "ray", "--out", str(work / f"run{r}")]
                load = os.getloadavg()[0]
                wall, rep = run(cmd, env)
                row = {"engine": engine, "round": r, "photos": rep["added"] + rep["failed"], "wall_s": round(wall, 2),
                       "photos_per_s": round(a.n / wall, 2), "loadavg_1m_before": round(load, 2),
                       "report_seconds": rep["seconds"]}
                if engine == "ray":
                    c = rep["cluster"]
                    row.update(job_s=c["job_seconds"], ingest_s=c["ingest_seconds"], actors=c.get("actors"),
                               blocks=c.get("blocks"), job_photos_per_s=round(a.n / c["job_seconds"], 2),
                               other_s=round(wall - c["job_seconds"] - c["ingest_seconds"], 2))
                print(json.dumps(row), flush=True)
                rows.append(row)
        ingest = ingest_rate(a.ingest_rows, work) if a.ingest_rows else None
        if ingest:
            print(json.dumps(ingest), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(engine, key):
        xs = [r[key] for r in rows if r["engine"] == engine]
        return max(xs) if key.endswith("per_s") else min(xs)

    plain, ray_ = best("plain", "photos_per_s"), best("ray", "photos_per_s")
    lines = [
        f"# bench/ray_index.py --n {a.n} --rounds {a.rounds}  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        f"# machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB; Python {m['python']}, Ray {ray.__version__}",
        f"# load average at start: {m['loadavg_1m_at_start']} (a box shared with other jobs: absolute figures are low)",
        f"# {a.n} camera-like 12-MP JPEGs (4000x3000, q90), shipped checkpoint, CPU, beam 3, fresh library each run",
        "",
        *(json.dumps(r) for r in rows),
        "",
        f"plain index : {plain:.2f} photos/s (best of {a.rounds}, whole command)",
        f"engine ray  : {ray_:.2f} photos/s (best of {a.rounds}, whole command: Ray start-up + job + ingest)",
        f"ray / plain : {ray_ / plain:.2f}",
    ]
    if ingest:
        lines.append(f"ingest      : {ingest['rows_per_s']:.0f} rows/s ({ingest['rows']} synthetic shard rows into an "
                     f"empty library, plan + writes + caches, {ingest['wall_s']} s; load {ingest['loadavg_1m']})")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-4:]))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
