#!/usr/bin/env python
"""IVF-PQ against flat and IVF-SQ8 at 1M photos: build time, bytes per vector (disk, RAM), query p50, recall@10.

The vectors are those of bench/query_latency.py's synthetic 1M library: the MiniLM embeddings of a pool of
--pool recombined Flickr8k caption phrases (query_latency.Corpus; cached in the temp folder by that script),
each photo's copy perturbed by Gaussian noise (sigma 0.015/dim, renormalised), so ~N/pool near-duplicates
surround each pool caption — a hard case for coarse codes. They are written into a real library database
(store.db.open_store: every migration) as photos.caption_embedding only (raw sqlite3, journal off: a bench
shortcut), and every index is built the way the search caches build it: read from SQLite chunk by chunk
(store/vectors.iter_vectors), IVF types trained on store/vectors.sample_vectors, saved with vector_file.

Queries: --queries Flickr8k dev captions embedded with MiniLM. Recall@10 is against the flat index (exact
inner product over the same vectors). Latency: one query at a time (as Library.query), one FAISS thread
(dense.py sets it for single queries); the IVF-PQ rows include reading the top R candidates' exact vectors
from SQLite by id (store/vectors.read_vectors) and re-scoring them. RAM: resident-set growth of a fresh process
loading the saved file (/proc/self/statm), per vector.

    python bench/ivfpq.py                      # 1M, ~10 min on 2 busy cores, ~4 GB of disk in a temp dir
    python bench/ivfpq.py --size 50000 --queries 50   # smoke test
    python bench/ivfpq.py --size 10000000 --kinds ivfpq --pq-m 96 --rerank 100 200 400 --workdir DIR \
        --out bench/results/ivfpq_10m.txt     # 10M: ~20 GB of disk, ~25 min; exact top-10 streamed from the store

Without "flat" among --kinds the exact top-10 is found by streaming every stored vector past the queries
(numpy, chunk by chunk), so no flat index needs to fit in memory (10M vectors: 15 GB).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import query_latency as ql  # noqa: E402  (the synthetic library's generators)

RESULTS = HERE / "results"


LOAD_RSS = """
import os, sys
from imgsearch.search.dense import VectorIndex
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
VectorIndex(index_type="flat")
before = rss()
vi = VectorIndex.load(sys.argv[1])
print(rss() - before)
"""


def load_rss_bytes(path: Path) -> int:
    """Resident-set growth of a fresh process when it loads the saved index (as a query process does)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", LOAD_RSS, str(path)], check=True, capture_output=True, text=True,
                         cwd=HERE.parent)
    return int(out.stdout.split()[-1])


def pool_embeddings(pool_n: int, seed: int):
    """The MiniLM embeddings of query_latency's pool captions (its temp-folder cache, else embedded now)."""
    from imgsearch.text.embed import TextEmbedder

    emb = TextEmbedder.load()
    cache = Path(tempfile.gettempdir()) / f"imgsearch_qbench_pool_{pool_n}_{seed}_{emb.version[:24]}.npy"
    if cache.is_file():
        return emb, np.load(cache)
    corpus = ql.Corpus(seed)
    caps = [" ".join(t) for t in corpus.pool(pool_n)]
    pool_emb = np.asarray(emb.embed(caps, batch_size=256), dtype=np.float32)
    try:
        np.save(cache, pool_emb)
    except OSError:
        pass
    return emb, pool_emb


def dev_queries(emb, n: int, seed: int) -> np.ndarray:
    """(n, 384) MiniLM embeddings of n Flickr8k dev captions drawn at random (seed + 1)."""
    dev = ql.load_captions("dev")
    rng = np.random.default_rng(seed + 1)
    qtext = [dev[i] for i in rng.choice(len(dev), min(n, len(dev)), replace=False)]
    return np.asarray(emb.embed(qtext), dtype=np.float32)


def build_store(db: Path, n: int, pool_emb: np.ndarray, seed: int, chunk: int = 50_000) -> float:
    """A real library database with n photos that have only a caption vector (query_latency's recipe)."""
    from imgsearch.store.db import open_store

    t = time.perf_counter()
    open_store(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-262144"):
        conn.execute(f"PRAGMA {pragma}")
    rng = np.random.default_rng(seed)
    conn.execute("BEGIN")
    for start in range(1, n + 1, chunk):
        m = min(chunk, n - start + 1)
        which = rng.integers(0, len(pool_emb), m)
        vecs = ql._unit(pool_emb[which] + rng.normal(0, 0.015, (m, ql.DIM)).astype(np.float32)).astype("<f4")
        conn.executemany(
            "INSERT INTO photos(id, path, folder, size, mtime_ns, indexed_at, caption_embedding) "
            "VALUES (?, ?, '/p', 1, 1, '2026-01-01 00:00:00.000000', ?)",
            ((start + j, f"/p/{start + j}.jpg", vecs[j].tobytes()) for j in range(m)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return time.perf_counter() - t


def p50_ms(fn, queries: np.ndarray) -> float:
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def exact_top(batches, qvecs: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) ids of the k highest inner products over every (ids, vectors) batch: a running top-k."""
    best_s = np.full((len(qvecs), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(qvecs), k), -1, dtype=np.int64)
    for ids, vecs in batches:
        scores = qvecs @ vecs.T                                    # (Q, chunk)
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def recall(ref: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(r[:k].tolist()) & set(g[:k].tolist())) / k for r, g in zip(ref, got)]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--pool", type=int, default=12000)
    ap.add_argument("--rerank", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--pq-m", type=int, nargs="+", default=[48, 96], help="PQ sub-quantisers (bytes per code)")
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivfsq8", "ivfpq"], choices=["flat", "ivfsq8", "ivfpq"],
                    help="index types to measure (without flat the exact top-10 is streamed from the store)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="default: a temp dir, removed at the end")
    ap.add_argument("--out", default=str(RESULTS / "ivfpq.txt"))
    args = ap.parse_args(argv)

    from imgsearch.search import faiss_lib
    faiss = faiss_lib.load()

    from imgsearch.search import dense
    from imgsearch.search.dense import VectorIndex
    from imgsearch.store.db import open_store
    from imgsearch.store import vectors as stored

    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="imgsearch_ivfpq_"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.size
    try:
        emb, pool_emb = pool_embeddings(args.pool, args.seed)
        qvecs = dev_queries(emb, args.queries, args.seed)
        say(f"# bench/ivfpq.py: {n:,} vectors (query_latency's synthetic library: {len(pool_emb):,} MiniLM-embedded "
            f"caption phrases + noise 0.015/dim), {len(qvecs)} Flickr8k dev-caption queries, k=10")
        say(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; FAISS {faiss.__version__}, "
            f"{faiss.omp_get_max_threads()} OpenMP threads for builds, 1 per single query")
        db = work / "library.db"
        say(f"store: {build_store(db, n, pool_emb, args.seed):.0f} s to write {n:,} caption vectors into "
            f"{db.stat().st_size / 2**30:.2f} GiB of SQLite")
        store = open_store(db)
        rows: list[dict] = []
        ref = None
        if "flat" not in args.kinds:
            t = time.perf_counter()
            ref = exact_top(stored.iter_vectors(store, "caption", chunk=65536), qvecs, 10)
            say(f"exact top-10 of {len(qvecs)} queries (streamed from the store, numpy): {time.perf_counter() - t:.1f} s")
        todo = [("flat", None), ("ivfsq8", None)] + [("ivfpq", m) for m in args.pq_m]
        for kind, pq_m in [t for t in todo if t[0] in args.kinds]:
            gc.collect()
            t = time.perf_counter()
            vi = VectorIndex.build(stored.iter_vectors(store, "caption"), index_type=kind, count=n,
                                   **({"pq_m": pq_m} if pq_m else {}),
                                   sample=lambda m: stored.sample_vectors(store, "caption", m, n),
                                   exact_vectors=lambda ids: stored.read_vectors(store, "caption", ids))
            build_s = time.perf_counter() - t
            path = vi.save(work / f"{kind}.faiss", revision="bench")
            disk = path.stat().st_size
            params = {"flat": "", "ivfsq8": f"IVF{vi.nlist},SQ8 nprobe {vi.nprobe}",
                      "ivfpq": f"IVF{vi.nlist},PQ{vi.pq_m}x{vi.pq_nbits} nprobe {vi.nprobe}"}[kind]
            del vi
            gc.collect()
            ram = load_rss_bytes(path)
            vi = VectorIndex.load(path, exact_vectors=lambda ids: stored.read_vectors(store, "caption", ids))
            if kind == "flat":
                t = time.perf_counter()
                ref, _ = vi.search(qvecs, 10)
                say(f"exact top-10 of {len(qvecs)} queries (flat, batched): {time.perf_counter() - t:.1f} s")
            variants = [("", None)] if kind != "ivfpq" else [("PQ scores only", 0)] + [
                (f"+ exact re-rank R={r}", r) for r in args.rerank]
            for label, r in variants:
                if r is not None:
                    vi.rerank = max(r, 10)
                    vi.exact_vectors = (lambda ids: stored.read_vectors(store, "caption", ids)) if r else None
                I, _ = vi.search(qvecs, 10)
                rec = recall(ref, I)
                lat = p50_ms(lambda q: vi.search(q, 10), qvecs[:args.latency_queries])
                rows.append({"index": f"{kind} {label}".strip(), "params": params, "build_s": build_s,
                             "disk_B_per_vec": disk / n, "ram_B_per_vec": ram / n, "p50_ms": lat, "recall_at_10": rec})
                say(f"{rows[-1]['index']}: {params}; build {build_s:.0f} s; {disk / n:.0f} B/vector on disk, "
                    f"{ram / n:.0f} B/vector RSS; p50 {lat:.2f} ms; recall@10 {rec:.3f}")
            del vi
            (work / f"{kind}.faiss").unlink()
        t = time.perf_counter()
        for q in qvecs[:args.latency_queries]:
            stored.read_vectors(store, "caption", np.arange(1, n, n // 100)[:100])
        per_q = (time.perf_counter() - t) * 1000 / args.latency_queries
        say(f"(reading 100 exact vectors by id from SQLite: {per_q:.2f} ms "
            "per query, spread ids, warm page cache)")
        store.close()
        say("")
        say(f"| index ({n:,} vectors) | parameters | build s | disk B/vector | RAM B/vector | p50 ms | recall@10 |")
        say("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            say(f"| {r['index']} | {r['params'] or 'exact'} | {r['build_s']:.0f} | {r['disk_B_per_vec']:.0f} | "
                f"{r['ram_B_per_vec']:.0f} | {r['p50_ms']:.2f} | {r['recall_at_10']:.3f} |")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"size": n, "rows": rows, "defaults": {
            "PQ_MIN": dense.PQ_MIN, "PQ_M": dense.PQ_M, "PQ_RERANK": dense.PQ_RERANK, "pq_rerank(size)": dense.pq_rerank(n), "IVF_NPROBE": dense.IVF_NPROBE}},
            indent=1) + "\n")
        print(f"wrote {args.out}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
