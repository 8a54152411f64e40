#!/usr/bin/env python
"""What a new library's SQLite page size (imgsearch/store/db.PAGE_SIZE) does to a bulk ingest and to a query's reads.

For each page size: Library.ingest of the same synthetic shards (bench/ray_index.make_shards: rows the size of real
ones, 12.6 KB of cells and four 384-d vectors each) into a new library made with that page size, in a fresh process
(PAGE_SIZE set before the library is created; sizes alternate round by round), then the reads every query makes
for its hits — search/hitlist.read_rows (path, caption, dates, OCR text, copies, tags) of 40 random photos — timed
over --reads random sets, the file's pages in the OS cache (each set read once before), optionally also with
SQLite's memory-mapped reads (``--mmap``: PRAGMA mmap_size on every connection).

    python bench/page_size.py                              # 100k rows, 4 KiB vs 64 KiB, 2 rounds
    python bench/page_size.py --rows 20000 --sizes 4096 16384 65536 --rounds 1 --mmap

Results are printed and appended to bench/results/page_size.txt.
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

from index_throughput import machine  # noqa: E402

INGEST = """
import json, sys, time
import imgsearch.store.db as db
db.PAGE_SIZE = int(sys.argv[3])
from imgsearch import Library
with Library(sys.argv[1]) as lib:
    t0 = time.monotonic()
    rep = lib.ingest(sys.argv[2])
    wall = time.monotonic() - t0
print(json.dumps({"wall_s": wall, "added": rep.added, "phases": rep.phases}))
"""

READS = """
import json, random, statistics, sys, time
from sqlalchemy import event
from imgsearch.store.db import open_store
from imgsearch.search.hitlist import read_rows
store = open_store(sys.argv[1])
mmap = int(sys.argv[3])
if mmap:
    @event.listens_for(store.engine, "connect")
    def _mmap(conn, _rec):
        conn.execute(f"PRAGMA mmap_size = {mmap}")
    store.engine.dispose()
with store.engine.connect() as c:
    n = c.exec_driver_sql("SELECT max(id) FROM photos").scalar()
    page = c.exec_driver_sql("PRAGMA page_size").scalar()
rng = random.Random(0)
sets = [rng.sample(range(1, n + 1), 40) for _ in range(int(sys.argv[2]))]
for s in sets:
    read_rows(store, s)
ts = []
for s in sets:
    t = time.perf_counter()
    read_rows(store, s)
    ts.append(time.perf_counter() - t)
print(json.dumps({"page_size": page, "read_rows_40_p50_ms": statistics.median(ts) * 1e3,
                  "read_rows_40_p90_ms": sorted(ts)[int(len(ts) * 0.9)] * 1e3}))
"""


def _py(code: str, *args) -> dict:
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 65536])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reads", type=int, default=600, help="random sets of 40 hits read a library")
    ap.add_argument("--mmap", action="store_true", help="also read with PRAGMA mmap_size = 4 GB")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgsearch-bench-page-size")
    ap.add_argument("--out", type=Path, default=RESULTS / "page_size.txt")
    args = ap.parse_args(argv)

    from ray_index import du, make_shards

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    m = machine(with_torch=False)
    head = (f"# bench/page_size.py --rows {args.rows} --sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds}"
            f"{' --mmap' if args.mmap else ''}  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"{m['cpu_model']}, {m['cores']} cores, sqlite {m['sqlite']}, load {m['loadavg_1m_at_start']})")
    print(head, flush=True)
    lines = [head]
    try:
        run = make_shards(args.rows, args.work)
        for r in range(args.rounds):
            for size in args.sizes:
                db = args.work / f"lib-{size}-{r}" / "library.db"
                got = _py(INGEST, db, run, size)
                assert got["added"] == args.rows, got
                row = {"page_size": size, "round": r, "rows": args.rows, "ingest_s": round(got["wall_s"], 2),
                       "rows_per_s": round(args.rows / got["wall_s"], 1),
                       "phases_s": {k: round(v, 2) for k, v in got["phases"].items()},
                       "library_gb": round(du(db.parent) / 1e9, 3)}
                for mm in ((0, 4_000_000_000) if args.mmap else (0,)):
                    reads = _py(READS, db, args.reads, mm)
                    assert reads["page_size"] == size, reads
                    key = "mmap_" if mm else ""
                    row[f"{key}read_rows_40_p50_ms"] = round(reads["read_rows_40_p50_ms"], 2)
                    row[f"{key}read_rows_40_p90_ms"] = round(reads["read_rows_40_p90_ms"], 2)
                print(json.dumps(row), flush=True)
                lines.append(json.dumps(row))
                shutil.rmtree(db.parent)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
