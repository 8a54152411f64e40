#!/usr/bin/env python
"""Benchmark BM25 engines for imgsearch: SQLite FTS5 bm25() vs bm25s vs rank-bm25.

Every engine ranks the same documents, normalised once with imgsearch.text.normalize.search_terms
(so tokenisation, stopwords and stemming are identical), with the same BM25 variant:
k1=1.2, b=0.75 (FTS5's compiled-in constants), idf = ln((N - n + 0.5) / (n + 0.5)).
  * fts5       imgsearch.search.bm25 (the runtime path): FTS5 table over the space-joined terms.
  * fts5_cache imgsearch.search.bm25_cache.BM25Cache built from that table (precomputed FTS5 scores, NumPy).
  * bm25s      bm25s.BM25(method="robertson") (negative idf clipped to 0 instead of FTS5's 1e-6).
  * rank_bm25  rank_bm25.BM25Okapi with FTS5's idf (<= 0 -> 1e-6): the reference scorer.
Query latency includes normalising the query text. Top-10 agreement is measured against rank_bm25
on the same corpus: "exact" = same id set; "tie-aware" = any difference lies only among documents
whose reference score equals the reference's 10th score (ties may be broken differently).

Corpus: synthetic captions recombined from Flickr8k train caption phrases (subject / action /
place), three per document plus their keywords, like a photo's n-best captions + keywords + tags
(falls back to a small built-in phrase list without Flickr8k). Queries: Flickr8k dev captions.

    python bench/bm25_engines.py --sizes 100000 1000000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsearch.search import bm25 as fts  # noqa: E402
from imgsearch.search.bm25_cache import BM25Cache  # noqa: E402
from imgsearch.text.normalize import STOPWORDS, keywords, search_terms, stem, tokenize  # noqa: E402

FLICKR = Path(os.environ.get("FLICKR8K", "/work/shared/data/flickr8k"))
AUX = {"is", "are", "was", "were", "sits", "stands", "runs", "jumps", "plays", "walks", "rides", "holds",
       "looks", "climbs", "swims", "lays", "lies", "wears", "waits", "sit", "stand", "run", "jump", "play"}
PREPS = {"in", "on", "at", "with", "near", "by", "through", "into", "over", "under", "across", "along",
         "down", "up", "behind", "beside", "next", "outside", "inside", "around", "from", "towards", "past"}
FALLBACK_CAPTIONS = [
    "a black dog is running through the grass", "two children are playing on the beach",
    "a man in a red shirt is climbing a rock wall", "a woman with a blue umbrella walks down the street",
    "a brown dog jumps over a fence in the park", "a group of people stand in front of a building",
    "a young boy rides a bicycle along the road", "a girl in a pink dress sits on a bench",
    "a surfer is riding a wave in the ocean", "a skier jumps down a snowy mountain",
    "two dogs are playing with a ball in the snow", "a man is sitting at a table with a cup of coffee",
]


def load_captions(split: str) -> list[str]:
    path = FLICKR / f"captions_{split}.json"
    if path.is_file():
        return [a["caption"] for a in json.loads(path.read_text())["annotations"]]
    return list(FALLBACK_CAPTIONS)


def split_phrases(captions: list[str]):
    subj, act, place = [], [], []
    for c in captions:
        w = c.lower().strip(" .").split()
        if len(w) < 3:
            continue
        i = next((k for k in range(1, len(w)) if w[k] in AUX or w[k].endswith("ing")), None)
        if i is None:
            continue
        j = next((k for k in range(i + 1, len(w)) if w[k] in PREPS), len(w))
        subj.append(" ".join(w[:i]))
        act.append(" ".join(w[i:j]))
        if j < len(w):
            place.append(" ".join(w[j:]))
    return subj, act, place or ["outside"]


def make_corpus(n: int, seed: int, want_text: int = 0) -> tuple[list[list[str]], list[str]]:
    """n documents as search-term lists (+ the first `want_text` as text, to time normalisation).

    Each phrase is normalised once and documents are concatenations of phrase terms, which equals
    search_terms() of the concatenated text (phrases are joined by " . ", a token boundary) plus the
    stems of the captions' keywords — fast enough for 1M documents.
    """
    subj, act, place = split_phrases(load_captions("train"))
    stop = STOPWORDS
    cache: dict[str, tuple[list[str], list[str]]] = {}

    def phrase(p):
        hit = cache.get(p)
        if hit is None:
            toks = [t for t in tokenize(p) if t not in stop]
            hit = cache[p] = (toks, [stem(t) for t in toks])
        return hit

    rng = random.Random(seed)
    docs, texts = [], []
    for d in range(n):
        s = rng.choice(subj)
        parts = []
        for j in range(3):  # n-best: similar captions sharing a subject most of the time
            subject = s if j == 0 or rng.random() < 0.7 else rng.choice(subj)
            parts.append((subject, rng.choice(act), rng.choice(place)))
        terms, kw = [], {}
        for cap in parts:
            for p in cap:
                toks, stems = phrase(p)
                terms.extend(stems)
                for t, st in zip(toks, stems):
                    kw.setdefault(t, st)
        terms.extend(kw.values())
        docs.append(terms)
        if d < want_text:
            caps = [" ".join(c) for c in parts]
            texts.append(" . ".join(caps) + " . " + " ".join(keywords(caps)))
    return docs, texts


class Timer:
    """Wall and CPU time of the current thread (CPU time stays meaningful on a busy machine)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.thread_time() - self.c


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def dir_size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------- engines

class FTS5Engine:
    name = "fts5"

    def __init__(self, workdir: Path):
        self.path = workdir / "bench_fts5.db"

    def build(self, ids, docs_terms):
        if self.path.exists():
            self.path.unlink()
        self.conn = sqlite3.connect(self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        fts.ensure_fts(self.conn)
        with self.conn:
            self.conn.executemany(f"INSERT INTO {fts.TABLE}(rowid, terms) VALUES (?, ?)",
                                  ((i, " ".join(t)) for i, t in zip(ids, docs_terms)))
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def optimize(self):
        with self.conn:
            fts.optimize(self.conn)
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size(self):
        return dir_size(self.path)

    def search(self, query, k):
        return fts.search(self.conn, query, k)


class FTS5CacheEngine:
    """BM25Cache built from the fts5 engine's table: FTS5 scores, precomputed (the accelerator)."""

    name = "fts5_cache"

    def __init__(self, workdir: Path, fts5: "FTS5Engine"):
        self.fts5 = fts5
        self.path = workdir / "bench.bm25"

    def build(self, ids, docs_terms):
        BM25Cache.build(self.fts5.conn, revision=1).save(self.path)

    def reload(self):
        self.cache = BM25Cache.load(self.path)

    def size(self):
        return dir_size(self.path)

    def search(self, query, k):
        return self.cache.search(query, k)


class BM25sEngine:
    name = "bm25s"

    def __init__(self, workdir: Path):
        self.dir = workdir / "bench_bm25s"

    def build(self, ids, docs_terms):
        import bm25s

        self.ids = np.asarray(ids, dtype=np.int64)
        r = bm25s.BM25(method="robertson", k1=fts.K1, b=fts.B)
        r.index([list(t) for t in docs_terms], show_progress=False)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        r.save(str(self.dir))
        self.r = r
        self.vocab = r.vocab_dict

    def reload(self):
        import bm25s

        self.r = bm25s.BM25.load(str(self.dir), mmap=False)
        self.vocab = self.r.vocab_dict

    def size(self):
        return dir_size(self.dir)

    def search(self, query, k):
        terms = [t for t in fts.query_terms(query) if t in self.vocab]
        if not terms:
            return []
        docs, scores = self.r.retrieve([terms], k=k, show_progress=False, n_threads=1, return_as="tuple")
        out = [(int(self.ids[d]), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]
        return sorted(out, key=lambda x: (-x[1], x[0]))


class RankBM25Engine:
    """rank-bm25 with FTS5's idf: the reference scorer."""

    name = "rank_bm25"

    def build(self, ids, docs_terms):
        import math

        from rank_bm25 import BM25Okapi

        class FTS5Okapi(BM25Okapi):
            def _calc_idf(self, nd):
                for word, freq in nd.items():
                    idf = math.log(self.corpus_size - freq + 0.5) - math.log(freq + 0.5)
                    self.idf[word] = idf if idf > 0 else 1e-6

        self.ids = np.asarray(ids, dtype=np.int64)
        self.bm = FTS5Okapi([list(t) for t in docs_terms], k1=fts.K1, b=fts.B)

    def size(self):
        return 0

    def scores(self, query):
        terms = fts.query_terms(query)
        return self.bm.get_scores(terms) if terms else np.zeros(len(self.ids))

    def search(self, query, k):
        s = self.scores(query)
        top = np.argpartition(-s, min(k, len(s) - 1))[: k * 4 + 50]
        order = sorted(top.tolist(), key=lambda d: (-s[d], self.ids[d]))[:k]
        return [(int(self.ids[d]), float(s[d])) for d in order if s[d] > 0]


def agreement(ref_scores: np.ndarray, ref_top: list, got: list, id_to_idx) -> tuple[bool, bool, float]:
    a = {i for i, _ in ref_top}
    b = {i for i, _ in got}
    exact = a == b
    if exact:
        return True, True, 1.0
    overlap = len(a & b) / max(1, len(a))
    if len(a) != len(b):
        return False, False, overlap
    kth = min(s for _, s in ref_top)
    diff = (a ^ b)
    tie = all(abs(ref_scores[id_to_idx[i]] - kth) <= 1e-6 * max(1.0, abs(kth)) for i in diff)
    return False, tie, overlap


def run_size(n: int, args, queries: list[str], out) -> dict:
    def say(*a):
        print(*a, file=out, flush=True)

    res = {"size": n}
    t = time.perf_counter()
    docs_terms, texts = make_corpus(n, args.seed, want_text=min(n, 20000))
    res["generate_s"] = time.perf_counter() - t
    with Timer() as tm:
        check = [search_terms(x) for x in texts]
    res["normalise_us_per_doc"] = tm.cpu / max(1, len(texts)) * 1e6
    assert check == docs_terms[: len(check)], "phrase-level generation must equal search_terms(text)"
    ids = list(range(1, n + 1))
    id_to_idx = {i: i - 1 for i in ids}
    ntok = sum(len(d) for d in docs_terms)
    say(f"\n== {n:,} documents ({ntok / n:.1f} terms/doc avg; e.g. {texts[0][:110]!r}) ==")
    say(f"generate {res['generate_s']:.1f} s; search_terms() {res['normalise_us_per_doc']:.0f} us CPU/doc "
        f"(measured on {len(texts):,} docs, not part of any build time below)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bm25bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    engines = {}
    try:
        for name in args.engines:
            if name == "fts5_cache":
                if "fts5" not in engines:
                    raise SystemExit("fts5_cache needs fts5 listed before it in --engines")
                eng = FTS5CacheEngine(workdir, engines["fts5"])
            else:
                eng = {"fts5": FTS5Engine, "bm25s": BM25sEngine, "rank_bm25": lambda w: RankBM25Engine()}[name](workdir)
            with Timer() as tm:
                eng.build(ids, docs_terms)
            row = {"build_s": tm.wall, "build_cpu_s": tm.cpu}
            if name == "fts5":
                row["size_bytes_unoptimized"] = eng.size()
                with Timer() as tm:
                    eng.optimize()
                row["optimize_s"], row["optimize_cpu_s"] = tm.wall, tm.cpu
            if name in ("bm25s", "fts5_cache"):
                with Timer() as tm:
                    eng.reload()
                row["load_s"], row["load_cpu_s"] = tm.wall, tm.cpu
            row["size_bytes"] = eng.size()
            engines[name] = eng
            res[name] = row
        ref = engines.get("rank_bm25")
        ref_q = queries[: args.ref_queries] if ref else []
        ref_results = {}
        if ref:
            lat, cpu = [], []
            for q in ref_q:
                with Timer() as tm:
                    sc = ref.scores(q)
                    top = ref.search(q, args.k)
                lat.append(tm.wall)
                cpu.append(tm.cpu)
                ref_results[q] = (sc, top)
            res["rank_bm25"].update(p50_ms=pct(lat, 50) * 1e3, p95_ms=pct(lat, 95) * 1e3,
                                    p50_cpu_ms=pct(cpu, 50) * 1e3, p95_cpu_ms=pct(cpu, 95) * 1e3, queries=len(ref_q))
        for name, eng in engines.items():
            if name == "rank_bm25":
                continue
            eng.search(queries[0], args.k)  # warm-up
            lat, cpu, ex, tie, ov = [], [], 0, 0, []
            for q in queries:
                with Timer() as tm:
                    got = eng.search(q, args.k)
                lat.append(tm.wall)
                cpu.append(tm.cpu)
                if q in ref_results:
                    sc, top = ref_results[q]
                    e, ti, o = agreement(sc, top, got, id_to_idx)
                    ex += e
                    tie += ti
                    ov.append(o)
            row = res[name]
            row.update(p50_ms=pct(lat, 50) * 1e3, p95_ms=pct(lat, 95) * 1e3,
                       p50_cpu_ms=pct(cpu, 50) * 1e3, p95_cpu_ms=pct(cpu, 95) * 1e3, queries=len(queries))
            if ref_results:
                row.update(exact_top10=ex / len(ref_results), tie_aware_top10=tie / len(ref_results),
                           mean_overlap=float(np.mean(ov)), compared=len(ref_results))
        say("latency per query includes normalising the query; CPU = thread CPU time, wall = elapsed")
        say(f"{'engine':10s} {'build s':>13s} {'index':>10s} {'p50 ms':>13s} {'p95 ms':>13s} {'n':>4s}"
            f" {'top10 exact':>11s} {'tie-aware':>9s} {'overlap':>7s}  notes")
        say(f"{'':10s} {'cpu / wall':>13s} {'':>10s} {'cpu / wall':>13s} {'cpu / wall':>13s}")
        for name in args.engines:
            r = res[name]
            notes = []
            if "optimize_s" in r:
                notes.append(f"+optimize {r['optimize_cpu_s']:.1f}/{r['optimize_s']:.1f}s "
                             f"(unoptimised {fmt_bytes(r['size_bytes_unoptimized'])})")
            if "load_s" in r:
                notes.append(f"load from disk {r['load_cpu_s']:.2f}/{r['load_s']:.2f}s")
            if name == "rank_bm25":
                notes.append("reference, in memory only")
            agree = (f"{r['exact_top10']:11.1%} {r['tie_aware_top10']:9.1%} {r['mean_overlap']:7.3f}"
                     if "exact_top10" in r else f"{'(ref)':>11s} {'':>9s} {'':>7s}")
            size = fmt_bytes(r["size_bytes"]) if r["size_bytes"] else "-"
            say(f"{name:10s} {r['build_cpu_s']:6.1f}/{r['build_s']:<6.1f} {size:>10s}"
                f" {r['p50_cpu_ms']:6.2f}/{r['p50_ms']:<6.1f} {r['p95_cpu_ms']:6.2f}/{r['p95_ms']:<6.1f}"
                f" {r['queries']:4d} {agree}  {'; '.join(notes)}")
    finally:
        for eng in engines.values():
            if hasattr(eng, "conn"):
                eng.conn.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="corpus sizes (documents)")
    ap.add_argument("--queries", type=int, default=200, help="number of dev-caption queries")
    ap.add_argument("--ref-queries", type=int, default=None,
                    help="queries also scored by rank-bm25 for agreement (default: all; it is slow at 1M)")
    ap.add_argument("--engines", nargs="+", default=["rank_bm25", "fts5", "fts5_cache", "bm25s"],
                    choices=["rank_bm25", "fts5", "fts5_cache", "bm25s"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="keep index files here (default: a temp dir, removed)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    if args.ref_queries is None:
        args.ref_queries = args.queries
    dev = load_captions("dev")
    rng = random.Random(args.seed + 1)
    queries = rng.sample(dev, min(args.queries, len(dev)))
    print(f"machine: {platform.platform()}; python {platform.python_version()}; cpus {os.cpu_count()}; "
          f"sqlite {sqlite3.sqlite_version}; load avg {os.getloadavg()[0]:.2f}")
    try:
        import bm25s
        bv = bm25s.__version__
    except Exception:
        bv = "n/a"
    print(f"settings: k1={fts.K1} b={fts.B} idf=ln((N-n+0.5)/(n+0.5)); top-{args.k}; {len(queries)} queries "
          f"(Flickr8k dev captions{'' if (FLICKR / 'captions_dev.json').is_file() else ': ABSENT, built-in fallback'}); "
          f"OR-query of distinct search_terms; bm25s {bv}; seed {args.seed}")
    results = [run_size(n, args, queries, sys.stdout) for n in args.sizes]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
