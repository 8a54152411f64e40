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

Then the ingest rate alone (``--rows``; ``--n 0``: only it): make_shards writes that many synthetic shard rows the
size of real ones and the small files they describe (not timed), and Library.ingest writes them into an empty
library in a fresh process, its phases split out (plan, writes, FAISS, BM25 cache); ``--baseline-code DIR`` runs
an older tree's ingest first in each round on the same shards.

    python bench/ray_index.py                  # 240 JPEGs, 1 round
    python bench/ray_index.py --n 24 --rounds 1     # smoke test
    python bench/ray_index.py --n 0 --rows 100000   # the ingest alone (appended to bench/results/ingest_rate.txt)
    python bench/ray_index.py --n 0 --rows 20000 --rounds 3 --baseline-code /tmp/old   # before/after, alternating
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


CELLS_POOL = 256   # distinct cells blobs the synthetic rows draw from (dictionary-encoded in the shards)


def make_shards(n: int, work: Path, chunk: int = 10_000) -> Path:
    """``n`` small distinct files on disk and a run folder whose shards hold ``n`` described rows for them, the sizes
    of a real row: 3 captions, 6 tags, 6 keywords, 2 region tags, 4 distinct random 384-d vectors, 40 B of labels
    and 12.6 KB of cells (drawn from a pool of CELLS_POOL blobs so the shards of 1M rows fit on disk: ~7 GB instead
    of ~19 GB; the library stores each row's own 12.6 KB all the same), and the packed terms and document a worker
    writes beside them (store/writes.derived_rows). Made column by column, ``chunk`` rows a
    shard file (not timed). Returns the run folder."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from imgsearch.cluster import plan as cplan, shards
    from imgsearch.model.labels import LABELS_VERSION
    from imgsearch.store import writes

    rng = np.random.default_rng(0)
    pics, run = work / "ingest-pics", work / "ingest-run"
    (run / "shards" / "a").mkdir(parents=True)
    words = np.array("a dog cat man woman runs on the grass beach red blue ball water".split())
    version = "synthetic-000000000000+cells"
    pool = [rng.bytes(12_600) for _ in range(CELLS_POOL)]
    for k in range(0, n, chunk):
        m = min(chunk, n - k)
        paths, sizes, mtimes, infos = [], [], [], []
        for i in range(k, k + m):
            d = pics / f"d{i // 1000:04d}"
            if i % 1000 == 0:
                d.mkdir(parents=True, exist_ok=True)
            p = d / f"p{i:07d}.jpg"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b"\xff\xd8" + i.to_bytes(8, "little") * 16)
            st = os.fstat(fd)
            os.close(fd)
            paths.append(str(p)), sizes.append(st.st_size), mtimes.append(st.st_mtime_ns)
            infos.append(f'{{"size": {st.st_size}, "mtime_ns": {st.st_mtime_ns}, "content_hash": "{i:064x}", '
                         f'"width": 4000, "height": 3000, "taken_at": null, "gps": null}}')
        cap_words = words[rng.integers(0, len(words), (m, 3, 7))]
        caps = [[{"text": " ".join(cap_words[r, c]), "score": -float(c)} for c in range(3)] for r in range(m)]
        tag_idx = np.argsort(rng.random((m, len(words))), axis=1)[:, :6]
        tags = [[{"text": str(words[t]), "score": 0.5} for t in row] for row in tag_idx]

        def vectors():
            return pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(m * 384, dtype=np.float32)), 384)

        cols = {"path": paths, "reason": ["new"] * m, "photo_id": pa.nulls(m, pa.int64()), "size": sizes,
                "mtime_ns": mtimes, "model_version": [version] * m,
                "content_hash": [f"{i:064x}" for i in range(k, k + m)], "error": pa.nulls(m, pa.string()),
                "info": infos, "captions": caps, "tags": tags, "keywords": [[t["text"] for t in row] for row in tags],
                "caption_embedding": vectors(), "image_embedding": vectors(),
                "cells": [pool[j] for j in rng.integers(0, CELLS_POOL, m)], "labels": [rng.bytes(40)] * m,
                "label_embedding": vectors(), "region_tags": [row[:2] for row in tags],
                "visual_embedding": vectors(), "labels_version": [LABELS_VERSION] * m}   # current: no re-labelling planned
        made = [writes.derived_rows([c["text"] for c in cap], [(t["text"], t["score"]) for t in tag],
                                    [t["text"] for t in tag], [(t["text"], t["score"]) for t in tag[:2]])
                for cap, tag in zip(caps, tags)]   # what the workers make beside each description
        cols.update(terms=[t for t, _ in made], document=[d for _, d in made],
                    derived_version=[writes.DERIVED_VERSION] * m)
        table = pa.table({f.name: pa.array(cols[f.name], type=f.type) if not isinstance(cols[f.name], pa.Array)
                          else cols[f.name] for f in shards.SHARD_SCHEMA}, schema=shards.SHARD_SCHEMA)
        pq.write_table(table, run / "shards" / "a" / f"{k:08d}.parquet", use_dictionary=["cells", "labels"],
                       dictionary_pagesize_limit=64 << 20)
    cplan.write_run(run, [str(pics)], version, "")
    return run


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


INGEST_CODE = """
import json, sys, time
from imgsearch import Library
with Library(sys.argv[1]) as lib:
    t0 = time.monotonic()
    rep = lib.ingest(sys.argv[2])
    wall = time.monotonic() - t0
assert rep.added == int(sys.argv[3]), rep.to_dict()
print(json.dumps({"wall_s": wall, "phases": getattr(rep, "phases", {})}))
"""


def ingest_once(db: Path, run: Path, n: int, code: Path) -> dict:
    """One Library.ingest of ``run`` into the empty library ``db`` in a fresh process importing imgsearch from
    ``code`` (the tree, or a baseline copy): {"wall_s", "phases"} (no phases from code before they existed)."""
    p = subprocess.run([sys.executable, "-c", INGEST_CODE, str(db), str(run), str(n)], capture_output=True, text=True,
                       cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": str(code)})
    if p.returncode != 0:
        raise SystemExit(f"ingest with {code} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def ingest_rate(n: int, work: Path, rounds: int = 1, baseline: Path | None = None) -> list[dict]:
    """Rows/s of ``imgsearch ingest`` alone: make_shards(n) once, then ``rounds`` times Library.ingest into an empty
    library (plan + bulk inserts + search caches: FAISS and BM25), each in a fresh process, with its phases
    (ClusterReport.phases); with ``baseline`` (a copy of an older tree), that code's ingest first in each round,
    on the same shards (alternating: a busy box slows both alike)."""
    t0 = time.monotonic()
    run = make_shards(n, work)
    made = time.monotonic() - t0
    out = []
    for r in range(rounds):
        for name, code in ((("baseline", baseline),) if baseline else ()) + (("tree", ROOT),):
            db = work / f"ingest-lib-{name}{r}" / "library.db"
            load = os.getloadavg()[0]
            got = ingest_once(db, run, n, code)
            ph, wall = got["phases"], got["wall_s"]
            row = {"code": name, "round": r, "rows": n, "wall_s": round(wall, 2), "rows_per_s": round(n / wall, 1),
                   "phases_s": {k: round(v, 2) for k, v in ph.items()},
                   "write_rows_per_s": round(n / ph["writes_s"], 1) if "writes_s" in ph else None,
                   "library_gb": round(du(db.parent) / 1e9, 2), "shards_gb": round(du(run / "shards") / 1e9, 2),
                   "make_shards_s": round(made, 1), "loadavg_1m_before": round(load, 2)}
            print(json.dumps(row), flush=True)
            out.append(row)
            shutil.rmtree(db.parent)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="camera-size JPEGs")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--photos", type=Path, default=Path(tempfile.gettempdir()) / "imgsearch-bench-ray-photos")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray_index.txt")
    ap.add_argument("--rows", "--ingest-rows", dest="ingest_rows", type=int, default=20_000,
                    help="synthetic shard rows for the ingest rate (0: skip); --n 0 measures the ingest alone")
    ap.add_argument("--baseline-code", type=Path, default=None,
                    help="with --n 0: a copy of an older tree (e.g. git archive HEAD imgsearch | tar -x -C DIR) whose "
                         "ingest runs first in each round, on the same shards")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the synthetic files, shards and library go (deleted at the end)")
    a = ap.parse_args(argv)
    if a.ingest_rows >= 200_000:
        need = a.ingest_rows * 32_000   # ~25 KB a row in the library, ~7 KB in the shards
        free = shutil.disk_usage(a.work).free
        if free < need:
            raise SystemExit(f"{a.ingest_rows} rows need ~{need / 1e9:.0f} GB in {a.work}, {free / 1e9:.0f} GB free")

    m = machine(with_torch=False)
    import ray

    folder = a.photos / f"n{a.n}"
    if a.n:
        generate_photos(folder, a.n, 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    exe = [shutil.which("imgsearch") or "imgsearch"]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="imgsearch-bench-ray-", dir=a.work))
    try:
        for r in range(a.rounds if a.n else 0):
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
        ingests = ingest_rate(a.ingest_rows, work, a.rounds if not a.n else 1, a.baseline_code) if a.ingest_rows else []
        ingest = ingests[-1] if ingests else None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not a.n:   # the ingest alone: appended to its own results file
        out = a.out if a.out != RESULTS / "ray_index.txt" else RESULTS / "ingest_rate.txt"
        head = (f"# bench/ray_index.py --n 0 --rows {a.ingest_rows} --rounds {a.rounds}"
                f"{' --baseline-code ' + str(a.baseline_code) if a.baseline_code else ''}  "
                f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {m['cpu_model']}, {m['cores']} cores, "
                f"load at start {m['loadavg_1m_at_start']})\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(head + "".join(json.dumps(r) + "\n" for r in ingests))
        print(f"appended to {out}")
        return

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
                     f"empty library, plan + writes + caches, {ingest['wall_s']} s: {ingest['phases_s']}; load "
                     f"{ingest['loadavg_1m_before']})")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-4:]))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
