#!/usr/bin/env python
"""Query latency, cold start, memory, index build time and size of imgsearch at 10k / 100k / 1M photos.

Synthetic libraries are written straight into a real library database (created by
imgsearch.store.db.open_store, so every migration, the FTS5 table and its trigger exist), without
running the captioner:
  * photos: one empty stub file per photo (photos/dNNNN/pNNNNNNN.jpg; queries skip photos whose
    file is gone, so the files must exist), plausible size/mtime/hash/EXIF columns;
  * captions: 3 per photo (n-best), recombined from Flickr8k train caption phrases
    (subject / action / place, as bench/bm25_engines.py; built-in phrases without Flickr8k);
    the best caption is drawn from a pool of --pool distinct captions; each pool caption has
    --variants description templates (other n-best captions, keywords, tags, BM25 document), so
    at 1M a BM25 document repeats ~N/(pool*variants) times (vectors never repeat, see below);
  * caption embeddings: REAL MiniLM (imgsearch.text.embed) embeddings of the pool captions, each
    photo's copy perturbed by Gaussian noise (sigma 0.015/dim, renormalised: cosine ~0.96 to the
    clean vector) so no two photos share a vector;
  * photo ("image") embeddings: drawn, not computed: the photo's caption embedding plus Gaussian
    noise (sigma 0.05/dim, renormalised: cosine ~0.7) — the shipped checkpoint has a photo→text
    projection, so hybrid queries fuse three lists (bm25, caption, image) as they do for real;
  * keywords (content words of the captions + tag words) and tags (an ImageNet class name with its
    hypernyms, from imgsearch/model/data/imagenet_tags.json, for ~60% of photos) like the pipeline;
  * BM25 documents in photo_fts exactly as the pipeline writes them (search_terms of doc_text);
  * re-ranking cells (photo_cells, int8 as the pipeline packs them; ~12.6 KB per photo): drawn from a
    bank of --cell-bank random grids, and the photos recorded under the shipped checkpoint's
    version, so hybrid queries re-rank their top RERANK["depth"] with the shipped decoder's (cached,
    int8 ONNX) scorer as they do for real. The scorer's cost does not depend on the cell values.
The bulk insert uses raw sqlite3 with journal_mode=OFF, synchronous=OFF (a bench shortcut; the
pipeline writes in WAL transactions), then switches the file back to WAL.

Measured per size:
  * store build time (the synthetic SQL insert, not captioning), the build time of each vector
    index as the Library makes it (read the embeddings from SQLite, flat below 100k-200k vectors,
    IVF-SQ8 above — see imgsearch/search/dense.py — saved) and of the BM25 score cache;
  * on-disk size: library.db split by table (dbstat): photos, captions, tags, FTS5, indexes;
    the two FAISS files and the BM25 cache;
  * recall@10 of each vector index against exact search (brute force over the stored vectors)
    for the dev-caption query vectors, and its single-query latency; for IVF at several nprobe;
  * warm latency of Library.query(text, k=10, mode) for bm25 / dense / image / hybrid over
    Flickr8k dev captions (p50, p95; each mode runs until --queries or --mode-budget-s), with
    a per-component breakdown (MiniLM, BM25, FAISS, fuse, rows);
  * cold `imgsearch query TEXT --db DB` (the installed console script, a new process each time,
    warm OS page cache): wall time from spawn to exit with results printed, median of --cold-runs,
    and that process's peak RSS (os.wait4);
(An earlier version of this script also compared HNSW and flat SQ8 indexes: results in
bench/results/query_latency.json and query_latency_1m.json, summarised in bench/README.md.)

Targets at 1M: warm hybrid p50 <= 30 ms, p95 <= 100 ms; cold CLI <= 2.5 s (<= 1.5 s at 100k);
peak RSS <= 1.5 GB; vector-index recall@10 >= 0.95 of exact search.

    python bench/query_latency.py --sizes 10000 100000 1000000
    python bench/query_latency.py --sizes 2000 --queries 20 --pool 500 --cold-runs 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

_OMP = os.environ.get("OMP_NUM_THREADS")
from bm25_engines import load_captions, split_phrases  # noqa: E402  (it sets OMP_NUM_THREADS=1: undo below)

if _OMP is None:
    os.environ.pop("OMP_NUM_THREADS", None)
else:
    os.environ["OMP_NUM_THREADS"] = _OMP
from index_throughput import RESULTS, machine, median, pct, print_machine, run_measured  # noqa: E402

DIM = 384
COLD_API = (
    "import sys\n"
    "from imgsearch import Library\n"
    "with Library(sys.argv[1], create=False) as lib:\n"
    "    for h in lib.query(sys.argv[2], k=10):\n"
    "        print(h.rank, round(h.score, 4), h.path, h.caption, sep='\\t')\n"
    "print('torch imported' if 'torch' in sys.modules else 'torch not imported')\n"
)
MODES = ("bm25", "dense", "image", "hybrid", "hybrid_no_rerank")


def _query(lib, q: str, mode: str):
    if mode == "hybrid_no_rerank":
        return lib.query(q, k=10, mode="hybrid", rerank=False)
    return lib.query(q, k=10, mode=mode)


# ============================================================== synthetic library

class Corpus:
    """Recombined Flickr8k phrases; per-phrase normalisation is cached (1M photos in seconds)."""

    def __init__(self, seed: int):
        from imgsearch.text.normalize import STOPWORDS, stem, tokenize

        self.subj, self.act, self.place = split_phrases(load_captions("train"))
        self.rng = random.Random(seed)
        self._stop, self._stem, self._tok = STOPWORDS, stem, tokenize
        self._cache: dict[str, tuple[list[str], list[str]]] = {}
        tags = json.loads((ROOT / "imgsearch/model/data/imagenet_tags.json").read_text())
        self.tag_sets = [[t["name"], *t["hypernyms"]] for t in tags]

    def phrase(self, p: str):
        hit = self._cache.get(p)
        if hit is None:
            toks = [t for t in self._tok(p) if t not in self._stop]
            hit = self._cache[p] = (toks, [self._stem(t) for t in toks])
        return hit

    def triple(self, subject=None):
        r = self.rng
        return (subject or r.choice(self.subj), r.choice(self.act), r.choice(self.place))

    def pool(self, n: int) -> list[tuple[str, str, str]]:
        seen, out = set(), []
        tries = 0
        while len(out) < n and tries < n * 20:
            t = self.triple()
            tries += 1
            if t not in seen:
                seen.add(t)
                out.append(t)
        return out

    def photo(self, best: tuple[str, str, str]):
        """(captions [3], keywords, tags [(term, score)], fts terms string)."""
        r = self.rng
        parts = [best]
        for _ in range(2):
            parts.append(self.triple(best[0] if r.random() < 0.7 else None))
        tags: list[tuple[str, float]] = []
        if r.random() < 0.6:
            ts = r.choice(self.tag_sets)
            sc = 0.3 + 0.6 * r.random()
            tags = [(t, round(min(1.0, sc + 0.05 * j), 4)) for j, t in enumerate(ts)]
        terms: list[str] = []
        kw: dict[str, str] = {}
        for cap in parts:
            for p in cap:
                toks, stems = self.phrase(p)
                terms.extend(stems)
                for t, s in zip(toks, stems):
                    kw.setdefault(t, s)
        for t, _ in tags:
            toks, stems = self.phrase(t)
            for w, s in zip(toks, stems):
                kw.setdefault(w, s)
        # doc_text = captions . keywords . tags -> search_terms of each part, concatenated
        terms.extend(kw.values())
        for t, _ in tags:
            terms.extend(self.phrase(t)[1])
        caps = [" ".join(c) for c in parts]
        return caps, list(kw.keys()), tags, " ".join(terms)


def _unit(v: np.ndarray) -> np.ndarray:
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def make_templates(corpus: Corpus, pool: list[tuple[str, str, str]], variants: int) -> list[tuple]:
    """variants x len(pool) photo descriptions; template t = (pool caption t // variants, variant t % variants)."""
    return [corpus.photo(best) for best in pool for _ in range(variants)]


def build_library(n: int, workdir: Path, templates: list[tuple], variants: int, pool_emb: np.ndarray,
                  embedder_version: str, seed: int, chunk: int = 50000, model_version: str = "captioner-synthetic0000",
                  cell_bank: list[bytes] | None = None) -> dict:
    """Write n photos into a new library at workdir/library.db (+ empty stub files under workdir/photos).

    Photo rows (with their embeddings) are inserted from Python; captions, tags and FTS5 documents are
    expanded in SQL from the description templates (INSERT ... SELECT over a photo->template map)."""
    from imgsearch.store.db import open_store
    from imgsearch.store.models import pack_terms
    from imgsearch.model.labels import LABELS_VERSION
    from imgsearch.text.normalize import NORMALIZER_VERSION

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "library.db"
    photos_dir = workdir / "photos"
    res: dict = {"size": n}

    t = time.perf_counter()
    for d in range((n + 999) // 1000):
        (photos_dir / f"d{d:04d}").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        fd = os.open(photos_dir / f"d{(i - 1) // 1000:04d}" / f"p{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
    res["stub_files_s"] = time.perf_counter() - t

    t = time.perf_counter()
    open_store(db).close()  # schema via the Alembic migrations
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("PRAGMA temp_store=MEMORY")
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    indexed_at = "2026-01-01 00:00:00.000000"
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE t_caps(tid INTEGER, rank INTEGER, text TEXT, score REAL)")
    conn.execute("CREATE TEMP TABLE t_terms(tid INTEGER PRIMARY KEY, terms TEXT)")   # packed: photo_terms (rev 0011)
    conn.execute("CREATE TEMP TABLE t_fts(tid INTEGER PRIMARY KEY, terms TEXT)")
    conn.execute("CREATE TEMP TABLE t_map(pid INTEGER PRIMARY KEY, tid INTEGER)")
    for tid, (caps, kws, tags, terms) in enumerate(templates):
        conn.executemany("INSERT INTO t_caps VALUES (?,?,?,?)", [(tid, r, c, -0.5 - 0.1 * r) for r, c in enumerate(caps)])
        rows = {}   # one row a (kind, term), the first kept (the tags table's INSERT OR IGNORE before rev 0011)
        for kind, tm, sc in [("tag", tm, sc) for tm, sc in tags] + [("keyword", kw, 1.0) for kw in kws]:
            rows.setdefault((kind, tm), (kind, tm, sc))
        conn.execute("INSERT INTO t_terms VALUES (?, ?)", (tid, pack_terms(list(rows.values()))))
        conn.execute("INSERT INTO t_fts VALUES (?, ?)", (tid, terms))
    conn.execute("CREATE INDEX temp.t_caps_tid ON t_caps(tid)")
    pool_n = len(pool_emb)
    for start in range(1, n + 1, chunk):
        m = min(chunk, n - start + 1)
        which = rng.integers(0, pool_n, m)
        tids = which * variants + rng.integers(0, variants, m)
        cap_vecs = _unit(pool_emb[which] + rng.normal(0, 0.015, (m, DIM)).astype(np.float32))
        img_vecs = _unit(cap_vecs + rng.normal(0, 0.05, (m, DIM)).astype(np.float32))
        cap_b = [v.tobytes() for v in cap_vecs.astype("<f4")]
        img_b = [v.tobytes() for v in img_vecs.astype("<f4")]
        lab_b = [v.tobytes() for v in _unit(cap_vecs + rng.normal(0, 0.1, (m, DIM)).astype(np.float32)).astype("<f4")]
        rows = []
        for j in range(m):
            pid = start + j
            folder = f"{photos_dir}/d{(pid - 1) // 1000:04d}"
            rows.append((pid, f"{folder}/p{pid:07d}.jpg", folder, 2_000_000 + prng.randrange(2_000_000),
                         1_700_000_000_000_000_000 + pid, f"{pid:064x}", 4000, 3000,
                         f"2024-06-{1 + pid % 28:02d} 12:00:00.000000", templates[tids[j]][0][0], model_version,
                         None, indexed_at, cap_b[j], img_b[j], lab_b[j], LABELS_VERSION))
        conn.executemany(
            "INSERT INTO photos(id, path, folder, size, mtime_ns, content_hash, width, height, taken_at, caption, "
            "model_version, error, indexed_at, caption_embedding, image_embedding, label_embedding, labels_version) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT INTO t_map VALUES (?, ?)", zip(range(start, start + m), tids.tolist()))
        if cell_bank:
            pick = rng.integers(0, len(cell_bank), m)
            conn.executemany("INSERT INTO photo_cells(photo_id, data) VALUES (?, ?)",
                             ((start + j, cell_bank[pick[j]]) for j in range(m)))
    conn.execute("INSERT INTO captions(photo_id, rank, text, score) "
                 "SELECT m.pid, c.rank, c.text, c.score FROM t_map m JOIN t_caps c ON c.tid = m.tid ORDER BY m.pid, c.rank")
    conn.execute("INSERT INTO photo_terms(photo_id, terms) "
                 "SELECT m.pid, g.terms FROM t_map m JOIN t_terms g ON g.tid = m.tid ORDER BY m.pid")
    conn.execute("INSERT INTO photo_fts(rowid, terms) SELECT m.pid, f.terms FROM t_map m JOIN t_fts f ON f.tid = m.tid "
                 "ORDER BY m.pid")
    for k, v in (("revision", "1"), ("fts_normalizer", NORMALIZER_VERSION), ("text_embedder", embedder_version)):
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (k, v))
    conn.execute("COMMIT")
    for tname in ("t_caps", "t_terms", "t_fts", "t_map"):
        conn.execute(f"DROP TABLE temp.{tname}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    res["store_build_s"] = time.perf_counter() - t
    res["db"] = str(db)
    res["photos_dir"] = str(photos_dir)
    return res


def db_sizes(db: Path) -> dict:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    out = {"photos": 0, "captions": 0, "tags": 0, "fts5": 0, "indexes": 0, "other": 0}
    for name, size in rows:
        if name == "photos":
            out["photos"] += size
        elif name == "captions":
            out["captions"] += size
        elif name in ("tags", "photo_terms"):   # photo_terms: the tags packed a photo a row (rev 0011)
            out["tags"] += size
        elif name.startswith("photo_fts"):
            out["fts5"] += size
        elif name.startswith(("ix_", "sqlite_autoindex")):
            out["indexes"] += size
        else:
            out["other"] += size
    out["file"] = db.stat().st_size
    wal = Path(f"{db}-wal")
    out["wal"] = wal.stat().st_size if wal.exists() else 0
    return out


# ============================================================== measurements

class Breakdown:
    """Wraps the public steps of a Library's query engine to time each component of a query."""

    KEYS = ("embed", "bm25", "faiss_caption", "faiss_image", "faiss_labels", "fuse", "rerank", "cells", "score",
            "rows", "rows_read")
    # parts overlap: BM25 and one vector search run on the engine's workers while MiniLM and the other
    # searches run, half the cells and the re-ranked photos' rows ("rows_read") are read on them while the
    # rest is read and scored; "rerank" includes "cells" and "score", "rows" is what building the hits waited

    def __init__(self, lib):
        import imgsearch.search.engine as E

        import threading

        self.cur: dict[str, float] = {}
        self.lib = lib
        lock = threading.Lock()       # parts also run on the engine's workers

        def wrap(obj, name, key_fn):
            orig = getattr(obj, name)

            def timed(*a, **kw):
                t = time.perf_counter()
                try:
                    return orig(*a, **kw)
                finally:
                    k, dt = key_fn(a), time.perf_counter() - t
                    with lock:
                        self.cur[k] = self.cur.get(k, 0.0) + dt
            setattr(obj, name, timed)

        wrap(lib.engine, "bm25_search", lambda a: "bm25")
        wrap(lib.engine, "dense_search", lambda a: "faiss_" + a[0])
        wrap(lib.engine, "hits", lambda a: "rows")
        wrap(lib.engine, "rerank", lambda a: "rerank")
        import imgsearch.search.hitlist as HL
        from imgsearch.store import hot_reads as Q

        wrap(HL, "read_rows", lambda a: "rows_read")
        wrap(Q, "cells", lambda a: "cells")
        scorer = lib.engine.scorer()
        if scorer is not None:
            wrap(scorer, "score", lambda a: "score")
        emb = lib.embedder()
        wrap(emb, "embed", lambda a: "embed")
        wrap(E, "fuse_lists", lambda a: "fuse")

    def reset(self):
        self.cur = {}


MIN_QUERIES = 20


def time_queries(lib, bd: Breakdown, queries: list[str], mode: str, budget_s: float, min_q: int | None = None) -> dict:
    min_q = MIN_QUERIES if min_q is None else min_q
    lat, parts, empty = [], [], 0
    t_start = time.perf_counter()
    for i, q in enumerate(queries):
        bd.reset()
        t = time.perf_counter()
        hits = _query(lib, q, mode)
        lat.append(time.perf_counter() - t)
        parts.append(dict(bd.cur))
        empty += not hits
        if i + 1 >= min_q and time.perf_counter() - t_start > budget_s:
            break
    comp = {k: median([p.get(k, 0.0) for p in parts]) * 1e3 for k in Breakdown.KEYS}
    return {"n": len(lat), "p50_ms": pct(lat, 50) * 1e3, "p95_ms": pct(lat, 95) * 1e3, "mean_ms": float(np.mean(lat)) * 1e3,
            "max_ms": max(lat) * 1e3, "empty_results": empty, "component_median_ms": comp}


def exact_top(lib, kind: str, qvecs: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k photo ids of each query by brute force over the embeddings stored in SQLite."""
    best_s = np.full((len(qvecs), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(qvecs), k), -1, dtype=np.int64)
    from imgsearch.store.vectors import iter_vectors

    for ids, vecs in iter_vectors(lib.store, kind, chunk=65536):
        sc = qvecs @ vecs.T                                            # (Q, chunk)
        all_s = np.concatenate([best_s, sc], 1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, sc.shape)], 1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(all_s, top, 1)
        best_i = np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def recall_at_k(ref_I: np.ndarray, I: np.ndarray, k: int = 10) -> float:
    r = []
    for a, b in zip(ref_I[:, :k], I[:, :k]):
        sa = {int(x) for x in a if x >= 0}
        r.append(len(sa & {int(x) for x in b if x >= 0}) / max(1, len(sa)))
    return float(np.mean(r))


def run_size(n: int, args, templates, pool_emb, emb, queries: list[str], qvecs: np.ndarray) -> dict:
    from imgsearch.search import faiss_lib
    faiss_lib.load()   # imported before the timings, as before

    from imgsearch import paths as P
    from imgsearch.library import Library
    from imgsearch.search.dense import VectorIndex

    print(f"\n== {n:,} photos ==", flush=True)
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="qbench_"))
    workdir = base / f"lib_{n}"
    built = workdir / "built.json"  # written once the library is complete: --reuse measures it again
    res: dict = {"size": n}
    if args.reuse and built.is_file():
        b = json.loads(built.read_text())
        print(f"reusing the library built in {workdir} (store build {b['store_build_s']:.1f} s then)", flush=True)
    else:
        if workdir.exists():
            shutil.rmtree(workdir)
        b = None
    try:
        if b is None:
            b = build_library(n, workdir, templates, args.variants, pool_emb, emb.version, args.seed,
                              model_version=args.model_version, cell_bank=args.cell_blobs)
            built.write_text(json.dumps(b, default=str))
            print(f"stub files {b['stub_files_s']:.1f} s (not counted); store build {b['store_build_s']:.1f} s",
                  flush=True)
        res.update({k: v for k, v in b.items() if k not in ("db", "photos_dir")})
        db = Path(b["db"])

        t = time.perf_counter()
        lib = Library(db, create=False)
        res["library_open_s"] = time.perf_counter() - t
        res["faiss_build_s"] = {}
        for kind in ("caption", "image", "labels"):
            t = time.perf_counter()
            vi = lib.caches.vector_index(kind)
            res["faiss_build_s"][kind] = time.perf_counter() - t
            res.setdefault("index_type", {})[kind] = vi.index_type
            res.setdefault("ivf_nlist", {})[kind] = vi.nlist if vi.index_type == "ivfsq8" else None
        t = time.perf_counter()
        lib.caches.bm25.update()
        res["bm25_cache_build_s"] = time.perf_counter() - t
        files = {"faiss_captions": P.captions_faiss_path(db), "faiss_images": P.images_faiss_path(db),
                 "bm25_cache": P.bm25_cache_path(db)}
        res["sizes"] = db_sizes(db)
        res["sizes"].update({k: (p.stat().st_size if p.exists() else 0) for k, p in files.items()})
        s = res["sizes"]
        print(f"vector indexes {res['index_type']} built from SQLite and saved in "
              + ", ".join(f"{k} {v:.1f} s" for k, v in res["faiss_build_s"].items())
              + f"; BM25 cache {res['bm25_cache_build_s']:.1f} s; on disk: db {s['file'] / 2**20:.0f} MiB (photos "
              f"{s['photos'] / 2**20:.0f}, captions {s['captions'] / 2**20:.0f}, tags {s['tags'] / 2**20:.0f}, FTS5 "
              f"{s['fts5'] / 2**20:.0f}, indexes {s['indexes'] / 2**20:.0f}), faiss {s['faiss_captions'] / 2**20:.0f} + "
              f"{s['faiss_images'] / 2**20:.0f} MiB, BM25 cache {s['bm25_cache'] / 2**20:.0f} MiB", flush=True)

        # ---- recall of the vector indexes against exact search (brute force over the stored vectors)
        res["recall"] = {}
        for kind in ("caption", "image"):
            vi = lib.caches.vector_index(kind)
            ref_I = exact_top(lib, kind, qvecs, 10)
            out = {}
            probes = [vi.nprobe] if vi.index_type != "ivfsq8" else sorted({32, 64, 128, 256, vi.nprobe})
            default = vi.nprobe
            for nprobe in probes:
                vi.nprobe = nprobe
                I, _ = vi.search(qvecs, 10)
                lat = []
                for q in qvecs[:100]:
                    t = time.perf_counter()
                    vi.search(q, 40)
                    lat.append(time.perf_counter() - t)
                out[nprobe] = {"recall_at_10": recall_at_k(ref_I, I), "single_k40_p50_ms": pct(lat, 50) * 1e3,
                               "single_k40_p95_ms": pct(lat, 95) * 1e3}
                print(f"{kind} index ({vi.index_type}{f', nprobe {nprobe}' if vi.index_type == 'ivfsq8' else ''}): "
                      f"recall@10 vs exact {out[nprobe]['recall_at_10']:.3f}, k=40 search p50 "
                      f"{out[nprobe]['single_k40_p50_ms']:.2f} ms p95 {out[nprobe]['single_k40_p95_ms']:.2f} ms",
                      flush=True)
            vi.nprobe = default
            res["recall"][kind] = out

        # ---- warm latency
        bd = Breakdown(lib)
        for mode in MODES:  # warm-up: FAISS load, ONNX session, SQLite page cache
            for q in queries[:3]:
                _query(lib, q, mode)
        res["warm"] = {}
        for mode in MODES:
            r = time_queries(lib, bd, queries, mode, args.mode_budget_s)
            res["warm"][mode] = r
            c = r["component_median_ms"]
            print(f"warm {mode:6s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  (n={r['n']}; median parts: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in c.items() if v > 0) + ")", flush=True)

        # ---- cold CLI
        exe = shutil.which("imgsearch", path=str(Path(sys.executable).parent)) or "imgsearch"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        colds = []
        for i in range(args.cold_runs):
            r = run_measured([exe, "query", queries[i % len(queries)], "--db", str(db)], env=env)
            if r["rc"] != 0:
                raise RuntimeError(f"imgsearch query failed: {r['stderr'][-1500:]}")
            colds.append(r)
        api = []  # the same query through the Python API in a new process: the CLI minus its own imports
        for i in range(args.cold_runs):
            r = run_measured([sys.executable, "-c", COLD_API, str(db), queries[i % len(queries)]], env=env)
            if r["rc"] != 0:
                raise RuntimeError(f"cold API query failed: {r['stderr'][-1500:]}")
            api.append(r)
        base_py = run_measured([sys.executable, "-c", "pass"])
        res["cold_cli"] = {"wall_s_median": median([r["wall_s"] for r in colds]),
                           "wall_s_all": [r["wall_s"] for r in colds],
                           "cpu_s_median": median([r["cpu_s"] for r in colds]),
                           "maxrss_mib_max": max(r["maxrss_mib"] for r in colds),
                           "lines_printed": len(colds[0]["stdout"].splitlines()),
                           "bare_python_start_s": base_py["wall_s"],
                           "api_wall_s_median": median([r["wall_s"] for r in api]),
                           "api_cpu_s_median": median([r["cpu_s"] for r in api]),
                           "api_maxrss_mib_max": max(r["maxrss_mib"] for r in api),
                           "api_torch_imported": api[0]["stdout"].strip().splitlines()[-1]}
        c = res["cold_cli"]
        print(f"cold `imgsearch query` (hybrid): median {c['wall_s_median']:.2f} s of {len(colds)} "
              f"({', '.join(f'{w:.2f}' for w in c['wall_s_all'])}), CPU {c['cpu_s_median']:.2f} s, peak RSS "
              f"{c['maxrss_mib_max']:.0f} MiB, {c['lines_printed']} result lines (bare python start "
              f"{c['bare_python_start_s']:.2f} s)", flush=True)
        print(f"cold Python API query (new process: import imgsearch, Library(db).query): median "
              f"{c['api_wall_s_median']:.2f} s, CPU {c['api_cpu_s_median']:.2f} s, peak RSS {c['api_maxrss_mib_max']:.0f} MiB, "
              f"{c['api_torch_imported']}", flush=True)
        lib.close()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(base, ignore_errors=True)
    return res


def prepare_reranking(n_bank: int, seed: int) -> tuple[str, list[bytes]]:
    """The shipped checkpoint's version (photos recorded under it are re-ranked), its query scorer in
    the cache (exported now if missing: the one time this bench loads torch, in a child process), and
    a bank of random cell grids shaped like the shipped decoder's."""
    import subprocess

    from imgsearch.model.rerank import QueryScorer, pack_cells, scorer_path
    from imgsearch.model.versions import checkpoint_version
    from imgsearch.files import cache_dir

    version = checkpoint_version()
    if QueryScorer.load(version) is None:
        code = ("from imgsearch.model.captioner import Captioner\nfrom imgsearch.model.rerank import QueryScorer\n"
                "assert QueryScorer.for_captioner(Captioner.load(device='cpu')) is not None\n")
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    scorer = QueryScorer.load(version)
    if scorer is None:
        raise SystemExit("could not prepare the query scorer of the shipped checkpoint")
    d_model = int(json.loads(Path(f"{scorer_path(version, cache_dir())}.json").read_text())["d_model"])
    rng = np.random.default_rng(seed + 7)
    bank = pack_cells(rng.normal(0, 1.5, (n_bank, 49, d_model)).astype(np.float32))
    print(f"re-ranking: {n_bank} random cell grids of 49 x {d_model} ({len(bank[0])} bytes each), photos recorded "
          f"as {version}", flush=True)
    return version, bank


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=300, help="dev-caption queries per mode (at most)")
    ap.add_argument("--mode-budget-s", type=float, default=20.0,
                    help="stop a mode's loop after this many seconds (at least 20 queries)")
    ap.add_argument("--min-queries", type=int, default=20, help="queries per mode even past the budget")
    ap.add_argument("--pool", type=int, default=12000, help="distinct best captions embedded with MiniLM")
    ap.add_argument("--variants", type=int, default=4,
                    help="description templates per pool caption (n-best, keywords, tags, BM25 document)")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--faiss-threads", type=int, default=None, help="faiss.omp_set_num_threads (default: FAISS's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="build libraries here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built libraries")
    ap.add_argument("--reuse", action="store_true",
                    help="measure a library a --keep run left in --workdir instead of building it again")
    ap.add_argument("--json", default=str(RESULTS / "query_latency.json"))
    ap.add_argument("--cell-bank", type=int, default=256, help="distinct random re-ranking cell grids (0: no cells, "
                    "hybrid queries are then not re-ranked)")
    args = ap.parse_args(argv)

    from imgsearch.search import faiss_lib
    faiss = faiss_lib.load()

    from imgsearch.text.embed import TextEmbedder

    global MIN_QUERIES
    MIN_QUERIES = args.min_queries
    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    m = machine(with_torch=False)
    m["faiss_omp_threads"] = faiss.omp_get_max_threads()
    print_machine(m)
    dev = load_captions("dev")
    rng = random.Random(args.seed + 1)
    queries = rng.sample(dev, min(args.queries, len(dev)))
    flickr = (Path(os.environ.get("FLICKR8K", "/work/shared/data/flickr8k")) / "captions_train.json").is_file()
    print(f"settings: sizes {args.sizes}; {len(queries)} dev-caption queries per mode (budget {args.mode_budget_s:.0f} s "
          f"per mode); k=10; pool {args.pool} MiniLM-embedded captions{'' if flickr else ' (Flickr8k ABSENT: built-in phrases)'}; "
          f"FAISS threads {m['faiss_omp_threads']}; seed {args.seed}",
          flush=True)

    corpus = Corpus(args.seed)
    pool = corpus.pool(args.pool)
    pool_caps = [" ".join(t) for t in pool]
    t = time.perf_counter()
    templates = make_templates(corpus, pool, args.variants)
    print(f"{len(templates)} photo description templates ({args.variants} per pool caption) in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    emb = TextEmbedder.load()
    t = time.perf_counter()
    cache = Path(tempfile.gettempdir()) / f"imgsearch_qbench_pool_{args.pool}_{args.seed}_{emb.version[:24]}.npy"
    if cache.is_file():  # the MiniLM embeddings of the pool (same captions for the same pool size and seed)
        pool_emb = np.load(cache)
    else:
        pool_emb = np.asarray(emb.embed(pool_caps, batch_size=256), dtype=np.float32)
        try:
            np.save(cache, pool_emb)
        except OSError:
            pass
    qvecs = np.asarray(emb.embed(queries), dtype=np.float32)
    print(f"MiniLM ({emb.backend}): embedded {len(pool_caps)} pool captions + {len(queries)} queries in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    args.model_version, args.cell_blobs = "captioner-synthetic0000", None
    if args.cell_bank > 0:
        args.model_version, args.cell_blobs = prepare_reranking(args.cell_bank, args.seed)
    out = {"machine": m, "settings": {k: v for k, v in vars(args).items() if k not in ("json", "cell_blobs")},
           "sizes": []}
    for n in args.sizes:
        out["sizes"].append(run_size(n, args, templates, pool_emb, emb, queries, qvecs))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    summary = []
    for r in out["sizes"]:
        n = r["size"]
        h = r["warm"]["hybrid"]
        if n >= 1_000_000:
            summary.append(f"TARGET {n:,} warm hybrid p50 <= 30 ms / p95 <= 100 ms: {h['p50_ms']:.1f} / {h['p95_ms']:.1f} ms "
                           f"-> {'MET' if h['p50_ms'] <= 30 and h['p95_ms'] <= 100 else 'NOT MET'} ({r['index_type']})")
        lim = 2.5 if n >= 1_000_000 else 1.5 if n >= 100_000 else None
        if lim:
            c = r["cold_cli"]
            summary.append(f"TARGET {n:,} cold CLI <= {lim} s: {c['wall_s_median']:.2f} s -> "
                           f"{'MET' if c['wall_s_median'] <= lim else 'NOT MET'}; peak RSS {c['maxrss_mib_max']:.0f} MiB "
                           f"(<= 1.5 GB: {'MET' if c['maxrss_mib_max'] * 2**20 <= 1.5e9 else 'NOT MET'})")
        for kind, rec in r["recall"].items():
            from imgsearch.search.dense import IVF_NPROBE

            used = rec.get(IVF_NPROBE) or next(iter(rec.values()))
            summary.append(f"TARGET {n:,} {kind} index recall@10 >= 0.95 of exact: {used['recall_at_10']:.3f} -> "
                           f"{'MET' if used['recall_at_10'] >= 0.95 else 'NOT MET'}")
    out["summary"] = summary
    for line in summary:
        print(line)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
