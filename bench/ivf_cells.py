#!/usr/bin/env python
"""How many IVF cells at 1M vectors: build time (k-means + filling), recall@10 and query p50 of IVF-SQ8 for
several cell counts (nlist) and cells searched (nprobe).

The IVF builds are most of the time an ingest of a million photos spends after its writes (bench/README.md,
"Ingest rate"): four of them, one per vector kind, each a k-means on 40 vectors per cell and an assignment of
every vector to its nearest cell, both proportional to nlist. This measures what fewer cells cost in recall and
latency, on the vectors of bench/query_latency.py's synthetic 1M library (held in memory here, not in SQLite):

  * caption vectors: MiniLM embeddings of a pool of --pool recombined Flickr8k caption phrases, each photo's copy
    perturbed by Gaussian noise (sigma 0.015/dim, renormalised): ~N/pool near-duplicates around each pool
    caption, the hard case for coarse cells;
  * image vectors: a caption vector plus noise (sigma 0.05/dim, renormalised: cosine ~0.7), as that library's
    photo embeddings.

Queries: --queries Flickr8k dev captions embedded with MiniLM; recall@10 against exact inner-product search over
the same vectors. Builds on FAISS's OpenMP threads (all cores), training as dense.VectorIndex.train does (10
k-means rounds, IVF_TRAIN_PER_LIST vectors per cell, sampled evenly); single queries on one thread, as the
library searches.

    python bench/ivf_cells.py                                    # 1M, ~15 min on 2 cores, ~5 GB of RAM
    python bench/ivf_cells.py --size 100000 --nlist 256 512 --queries 50   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ivfpq            # noqa: E402  (the pool embeddings, recall, p50)
import query_latency as ql  # noqa: E402

RESULTS = HERE / "results"


def vectors(kind: str, n: int, pool_emb: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(pool_emb), n)
    out = np.empty((n, ql.DIM), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        v = ql._unit(pool_emb[which[s:e]] + rng.normal(0, 0.015, (e - s, ql.DIM)).astype(np.float32))
        if kind == "image":
            v = ql._unit(v + rng.normal(0, 0.05, (e - s, ql.DIM)).astype(np.float32))
        out[s:e] = v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--nlist", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 48, 64, 96, 128, 192])
    ap.add_argument("--kinds", nargs="+", default=["caption", "image"])
    ap.add_argument("--rounds", type=int, nargs="+", default=None,
                    help="k-means iterations of the cells to compare (default: dense.IVF_KMEANS_ROUNDS)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--pool", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "ivf_cells.txt"))
    args = ap.parse_args(argv)

    from imgsearch.search import faiss_lib
    faiss = faiss_lib.load()

    from imgsearch.search import dense
    from imgsearch.search.dense import VectorIndex

    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    emb, pool_emb = ivfpq.pool_embeddings(args.pool, args.seed)
    qvecs = ivfpq.dev_queries(emb, args.queries, args.seed)
    threads = faiss.omp_get_max_threads()
    say(f"# bench/ivf_cells.py: {args.size:,} vectors per kind (query_latency's synthetic library), {len(qvecs)} "
        f"Flickr8k dev-caption queries, k=10; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at "
        f"start; FAISS {faiss.__version__}, {threads} OpenMP threads for builds, 1 per single query")
    rows = []
    for kind in args.kinds:
        x = vectors(kind, args.size, pool_emb, args.seed + (0 if kind == "caption" else 7))
        ids = np.arange(1, len(x) + 1, dtype=np.int64)
        flat = faiss.IndexFlatIP(ql.DIM)
        flat.add(x)
        _, ref = flat.search(qvecs, 10)
        ref = ref + 1
        del flat
        for nlist, rounds in [(c, r) for c in args.nlist for r in (args.rounds or [dense.IVF_KMEANS_ROUNDS])]:
            dense.IVF_KMEANS_ROUNDS = rounds
            need = nlist * dense.IVF_TRAIN_PER_LIST
            sample = x[np.linspace(0, len(x) - 1, min(need, len(x))).astype(np.int64)]
            vi = VectorIndex(index_type="ivfsq8", nlist=nlist)
            t = time.perf_counter()
            vi.train(sample)
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            for s in range(0, len(x), 8192):
                vi._index.add_with_ids(x[s:s + 8192], ids[s:s + 8192])   # a new index: nothing to replace
            fill_s = time.perf_counter() - t
            sizes = np.array([vi._index.invlists.list_size(c) for c in range(vi.nlist)])
            for nprobe in args.nprobe:
                if nprobe > nlist:
                    continue
                vi.nprobe = nprobe
                faiss.omp_set_num_threads(threads)
                I, _ = vi.search(qvecs, 10)
                rec = ivfpq.recall(ref, I)
                half = len(qvecs) // 2   # the two halves of the queries: a setting that holds on both
                halves = [round(ivfpq.recall(ref[:half], I[:half]), 4), round(ivfpq.recall(ref[half:], I[half:]), 4)]
                faiss.omp_set_num_threads(1)
                lat = ivfpq.p50_ms(lambda q: vi.search(q, 10), qvecs[:args.latency_queries])
                faiss.omp_set_num_threads(threads)
                row = {"kind": kind, "nlist": nlist, "rounds": rounds, "nprobe": nprobe, "train_s": round(train_s, 2),
                       "fill_s": round(fill_s, 2), "scanned": round(nprobe / nlist, 4),
                       "biggest_cell": int(sizes.max()), "recall10": round(rec, 4), "recall10_halves": halves,
                       "p50_ms": round(lat, 3)}
                rows.append(row)
                say(json.dumps(row))
            del vi
    say("")
    say(f"| kind | nlist | k-means rounds | build s (k-means + fill, {threads} threads) | nprobe | share scanned | "
        "recall@10 | halves | biggest cell | p50 ms (1 thread) |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        say(f"| {r['kind']} | {r['nlist']} | {r['rounds']} | {r['train_s']:.1f} + {r['fill_s']:.1f} | {r['nprobe']} | "
            f"{r['scanned']:.3f} | {r['recall10']:.3f} | {r['recall10_halves'][0]:.3f} / "
            f"{r['recall10_halves'][1]:.3f} | {r['biggest_cell']} | {r['p50_ms']:.2f} |")
    with open(args.out, "a") as f:   # appended: one run per block
        f.write("\n".join(lines) + "\n\n")
    js = Path(args.out).with_suffix(".json")
    runs = json.loads(js.read_text()) if js.exists() else []
    runs = runs if runs and isinstance(runs[0], list) else ([runs] if runs else [])   # one list of rows per run
    js.write_text(json.dumps(runs + [rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
