#!/usr/bin/env python
"""Choose the hybrid fusion (method, RRF k, per-signal weights) by text→image Recall@K.

Indexes the images of a COCO-style caption file into a library (or reuses one made by
`imgsearch evaluate-retrieval --library`), runs every reference caption through each signal once
(bm25, caption embeddings, photo embeddings), then scores every fusion setting offline on the
same ranked lists. Prints a table, best first, and the setting to put into imgsearch/search/settings.py FUSION.

    python bench/tune_fusion.py --captions ../shared/data/flickr8k/captions_dev.json \\
        --images ../shared/data/flickr8k/images --library /tmp/dev-library.db

The offline fusion is the engine's (search/engine.py, search/fuse.py "zsum"): each signal's top
FUSION["depth"] photos whatever k, z-scores over those, a photo missing from a list gets the list's lowest
z-score. `--depth N` scores another fixed depth; `--rerank` then tunes the caption-likelihood re-ranking
(`--weights B/C/I` re-ranks another fusion); `--relevance` tables the relevance bar of search/relevance.py
(R@10 of each mode with the photos below a bar cut, the precision of the results at the bar, and what a
list of nonsense and off-topic queries returns at the default).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True, help="COCO-style caption JSON (every caption is a query)")
    ap.add_argument("--images", required=True, help="folder with its images")
    ap.add_argument("--library", required=True, help="library to index into / reuse")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--json", action="store_true", help="print the full table as JSON")
    ap.add_argument("--rerank", action="store_true",
                    help="then tune the caption-likelihood re-ranking (depth, weight) of the shipped fusion")
    ap.add_argument("--rerank-max-depth", type=int, default=60)
    ap.add_argument("--weights", default=None, metavar="B/C/I",
                    help="--rerank: re-rank this fusion (bm25/caption/image weights) instead of FUSION['weights']")
    ap.add_argument("--relevance", action="store_true",
                    help="then calibrate the relevance bar (search/relevance.py): R@10 of each mode when the photos "
                         "below a bar are cut, the precision of the results at the bar, what nonsense queries return")
    ap.add_argument("--depth", type=int, default=None,
                    help="photos per signal the fusion is made of (default: FUSION['depth'] of search/settings.py)")
    args = ap.parse_args()

    from imgsearch.library import Library
    from imgsearch.model.coco import load_captions
    from imgsearch.retrieval import recall_from_ranks

    refs = load_captions(args.captions)
    names, references = refs.file_names[:args.limit], refs.captions[:args.limit]
    paths = [str((Path(args.images) / n).resolve()) for n in names]
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; {len(paths)} photos")
    signals = ("bm25", "caption", "image")
    cache = Path(args.library).with_suffix(".fusion.npz")
    with Library(args.library) as lib:
        t0 = time.time()
        lib.index(paths, progress=False)
        print(f"index: {time.time() - t0:.1f} s")
        id_of = {h_path: pid for pid, h_path in _ids_paths(lib)}
        queries = [(q, id_of[p]) for p, caps in zip(paths, references) for q in caps if p in id_of]
        col = {pid: j for j, pid in enumerate(sorted(id_of.values()))}
        N, Q = len(col), len(queries)
        if cache.exists():
            data = np.load(cache)
            scores = {sig: data[sig] for sig in signals}
        else:
            t0 = time.time()
            qvecs = lib.embedder().embed([q for q, _ in queries])
            # per signal: (Q, N) scores, NaN where the signal did not return the photo
            scores = {sig: np.full((Q, N), np.nan, dtype=np.float32) for sig in signals}
            for qi, ((q, _), v) in enumerate(zip(queries, qvecs)):
                for sig, lst in lib.ranked_lists(q, v, "hybrid", N).items():
                    for pid, sc in lst:
                        scores[sig][qi, col[pid]] = sc
            np.savez(cache, **scores)
            print(f"{Q} queries, ranked lists in {time.time() - t0:.1f} s")
    true = np.array([col[pid] for _, pid in queries])

    def ranks_of(fused: np.ndarray) -> dict:
        """fused (Q, N), higher = better; ties broken in the true photo's disfavour."""
        t = fused[np.arange(Q), true][:, None]
        return recall_from_ranks(((fused >= t).sum(1)).tolist())

    def rank_matrix(sc: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(sc), -np.inf, sc)
        order = np.argsort(-filled, axis=1, kind="stable")
        r = np.empty_like(order)
        r[np.arange(Q)[:, None], order] = np.arange(1, N + 1)[None]
        return np.where(np.isnan(sc), np.inf, r).astype(np.float64)

    # what the Library fuses for any query: each signal's top FUSION["depth"], whatever k
    from imgsearch.search.settings import FUSION

    n_list = int(args.depth or FUSION["depth"])
    ranks = {sig: rank_matrix(scores[sig]) for sig in signals}
    present = {sig: ranks[sig] <= n_list for sig in signals}
    minmax, zs = {}, {}
    warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows: a signal that matched nothing
    for sig in signals:
        sc = np.where(present[sig], scores[sig].astype(np.float64), np.nan)
        lo, hi = np.nanmin(sc, 1, keepdims=True), np.nanmax(sc, 1, keepdims=True)
        minmax[sig] = np.nan_to_num((sc - lo) / np.where(hi > lo, hi - lo, 1.0), nan=0.0)
        mu, sd = np.nanmean(sc, 1, keepdims=True), np.nanstd(sc, 1, keepdims=True)
        z = (sc - mu) / np.where(sd > 0, sd, 1.0)
        # a query the signal returned nothing for: the signal adds nothing (the engine leaves empty lists out)
        zs[sig] = np.nan_to_num(np.where(present[sig], z, np.nanmin(z, 1, keepdims=True)), nan=0.0)

    rows = []
    for sig in signals:
        rows.append({"setting": f"{sig} alone", **ranks_of(np.nan_to_num(scores[sig].astype(np.float64), nan=-np.inf))})
    grid = list(itertools.product((0.0, 0.25, 0.5, 1.0), (0.0, 0.25, 0.5, 1.0, 1.5), (1.0, 2.0, 3.0, 4.0)))
    for method, k_rrf in [("rrf", k) for k in (5, 15, 30, 60)] + [("sum", 0), ("zsum", 0)]:
        for wb, wc, wi in grid:
            w = {"bm25": wb, "caption": wc, "image": wi}
            if method == "rrf":
                fused = sum(w[s] * np.where(present[s], 1.0 / (k_rrf + ranks[s]), 0.0) for s in signals)
            elif method == "sum":
                fused = sum(w[s] * minmax[s] for s in signals)
            else:
                fused = sum(w[s] * zs[s] for s in signals)
            rows.append({"setting": f"{method}{'' if method != 'rrf' else f' k={k_rrf}'} w={wb}/{wc}/{wi}",
                         "method": method, "k_rrf": k_rrf, "weights": w, **ranks_of(fused)})
    rows.sort(key=lambda r: -(r["R@1"] + r["R@5"] + r["R@10"]))
    if args.json:
        print(json.dumps(rows, indent=1))
    print(f"{len(rows) - len(signals)} fusion settings on the top {n_list} of each signal (as Library.query fuses "
          "them, whatever k); median rank is approximate beyond that")
    print(f"{'setting':40s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'medr':>5s}")
    singles = [r for r in rows if r["setting"].endswith("alone")]
    for r in rows[:15] + singles:
        print(f"{r['setting']:40s} {r['R@1']:6.3f} {r['R@5']:6.3f} {r['R@10']:6.3f} {r['median_rank']:5.0f}")
    best = next(r for r in rows if "method" in r)
    print("best:", json.dumps({"method": best["method"], "k_rrf": best["k_rrf"] or 60, "weights": best["weights"]}))
    if args.relevance:
        tune_relevance(args, scores, ranks, zs, true, n_list)
    if args.rerank:
        w = dict(zip(signals, map(float, args.weights.split("/")))) if args.weights else FUSION["weights"]
        if FUSION["method"] != "zsum":
            raise SystemExit("--rerank simulates the shipped zsum fusion only")
        fused = sum(w.get(s, 1.0) * zs[s] for s in signals)
        tune_rerank(args, fused, true, queries, col, w)


NONSENSE = ["the a of and is", "of the", "xqzvkj", "qwxz fjdkv", "asdfgh", "zxcvbnm", "hjkl", "🐶", "!!!",
            "blorp fnord", "lorem ipsum dolor sit amet", "jjjjjj", "kqzt wvxp"]
OFF_TOPIC = ["quantum chromodynamics", "a spreadsheet of quarterly taxes", "a javascript compiler error",
             "income tax return form", "password reset email", "linear algebra homework"]


def tune_relevance(args, scores: dict, ranks: dict, zs: dict, true: np.ndarray, depth: int) -> None:
    """The relevance bar: for each bar, R@10 of dense, image and hybrid (the fused order, before re-ranking)
    when the photos whose relevance is below it are cut, as the engine computes relevance: 1 for a photo in
    the query's BM25 list (hybrid), else its best cosine (a cosine signal's lowest listed cosine for a photo
    past its top ``depth``), at least 0. "at bar": the precision of the results whose relevance is within
    0.02 above the bar (what the last kept results of a query are), against the one photo each caption was
    written for — a lower bound, since other photos often fit the caption too."""
    from imgsearch.library import Library
    from imgsearch.search.settings import FUSION, RELEVANCE

    Q = len(true)
    cos = {s: scores[s].astype(np.float64) for s in ("caption", "image")}

    def listed(s):
        top = ranks[s] <= depth
        low = np.nanmin(np.where(top, cos[s], np.nan), 1, keepdims=True)
        return np.where(top, cos[s], low)

    floor0 = lambda a: np.maximum(np.nan_to_num(a, nan=0.0), 0.0)  # noqa: E731
    modes = {
        "dense": (cos["caption"], floor0(cos["caption"])),
        "image": (cos["image"], floor0(cos["image"])),
        "hybrid": (sum(FUSION["weights"][s] * zs[s] for s in zs),
                   np.where(ranks["bm25"] <= depth, 1.0, floor0(np.fmax(listed("caption"), listed("image"))))),
    }
    bars = sorted({round(float(b), 2) for b in np.arange(0.0, 0.305, 0.02)} | {float(RELEVANCE["min_score"])})
    print(f"\nrelevance bar (default {RELEVANCE['min_score']}): R@10 with the photos below it cut; at bar = precision "
          "of the results just above it; kept = photos kept per query")
    print(f"{'bar':>5s} | " + " | ".join(f"{m + ': R@10':>12s} {'at bar':>6s} {'kept':>6s}" for m in modes))
    for bar in bars:
        cells = []
        for mode, (order, rel) in modes.items():
            f = np.nan_to_num(order, nan=-np.inf)
            keep = rel >= bar
            t = f[np.arange(Q), true][:, None]
            r10 = ((((f >= t) & keep).sum(1) <= 10) & keep[np.arange(Q), true]).mean()
            near = keep & (rel < bar + 0.02)
            hit = near[np.arange(Q), true].sum()
            cells.append(f"{r10:12.4f} {hit / max(near.sum(), 1):6.4f} {keep.sum(1).mean():6.0f}")
        print(f"{bar:5.2f} | " + " | ".join(cells))
    with Library(args.library) as lib:
        for name, qs in (("nonsense", NONSENSE), ("off-topic", OFF_TOPIC)):
            found = {m: sum(bool(lib.query(q, k=10, mode=m)) for q in qs) for m in ("hybrid", "bm25", "dense", "image")}
            print(f"{name} queries ({len(qs)}) that return a photo at the default bar: "
                  + ", ".join(f"{m} {n}" for m, n in found.items()))


def tune_rerank(args, fused: np.ndarray, true: np.ndarray, queries, col: dict, w: dict) -> None:
    """Re-rank the shipped fusion's top D by log P(query | photo) for a grid of (depth, weight).

    Queries are split by photo into halves A and B (5 captions of a photo stay together): a setting
    chosen on A and scored on B shows how much of the gain is tuning to these queries."""
    from imgsearch.library import Library
    from imgsearch.search.settings import RERANK
    from imgsearch.model.rerank import rerank as rerank_rule
    from imgsearch.model.rerank import unpack_cells
    from imgsearch.store.queries import cells as stored_cells
    from imgsearch.retrieval import recall_from_ranks

    Q, D = len(queries), args.rerank_max_depth
    cand = np.argsort(-fused, axis=1, kind="stable")[:, :D]                       # (Q, D) columns
    ids = np.array(sorted(col, key=col.get))                                    # column → photo id
    # log-likelihoods cached per (query, photo) pair: another fusion (weights, depth) scores only new pairs
    cache = Path(args.library).with_suffix(".rerank-pairs.npz")
    known: dict[tuple[int, int], float] = {}
    if cache.exists():
        c = np.load(cache)
        known = {(int(q), int(p)): float(x) for q, p, x in zip(c["q"], c["p"], c["ll"])}
    ll = np.full((Q, D), np.nan, dtype=np.float32)
    todo = [qi for qi in range(Q) if any((qi, int(c)) not in known for c in cand[qi])]
    if todo:
        t0 = time.time()
        with Library(args.library) as lib:
            scorer = lib.engine.scorer()
            if scorer is None:
                raise SystemExit("this library has no re-ranking scorer (index it with a Transformer checkpoint)")
            blobs = stored_cells(lib.store, ids.tolist(), scorer.version)
            cells = unpack_cells([blobs[int(i)] for i in ids])                  # (N, 49, D) in column order
            for qi in todo:
                tok = scorer.tokens(queries[qi][0])
                miss = [int(c) for c in cand[qi] if (qi, int(c)) not in known]
                got = scorer.score(tok, cells[miss]) if tok is not None else np.full(len(miss), np.nan)
                known.update({(qi, c): float(x) for c, x in zip(miss, got)})
        keys = np.array(list(known), dtype=np.int64).reshape(-1, 2)
        np.savez(cache, q=keys[:, 0], p=keys[:, 1], ll=np.array(list(known.values()), dtype=np.float32))
        print(f"log-likelihoods of {len(todo)} queries (new pairs of the top {D}): {time.time() - t0:.1f} s")
    for qi in range(Q):
        ll[qi] = [known[(qi, int(c))] for c in cand[qi]]

    def ranks(depth: int, weight: float, sel: np.ndarray) -> dict:
        out = []
        for qi in np.flatnonzero(sel):
            order = [(int(c), float(fused[qi, c])) for c in cand[qi]]
            lik = {} if np.isnan(ll[qi, 0]) else {int(c): float(x) for c, x in zip(cand[qi][:depth], ll[qi][:depth])}
            got = [c for c, _ in rerank_rule(order, lik, depth, weight)]
            out.append(got.index(true[qi]) + 1 if true[qi] in got else int((fused[qi] >= fused[qi, true[qi]]).sum()))
        return recall_from_ranks(out)

    half = (true % 2) == 0
    rows = []
    for depth in sorted({10, 20, 30, 40, 50, D} & set(range(2, D + 1))):
        for weight in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
            a, b = ranks(depth, weight, half), ranks(depth, weight, ~half)
            al = ranks(depth, weight, np.ones(Q, bool))
            rows.append((depth, weight, a, b, al))
    plain = ranks(0, 0.0, np.ones(Q, bool))
    print(f"\ncaption-likelihood re-ranking of the fusion zsum {'/'.join(f'{w[s]:g}' for s in w)} over the top "
          f"{args.depth or FUSION_DEPTH()} of each signal; no re-ranking: "
          f"{plain['R@1']:.3f} / {plain['R@5']:.3f} / {plain['R@10']:.3f} (median rank {plain['median_rank']:.0f})")
    print(f"{'depth':>5s} {'weight':>6s} | {'A: R@1':>6s} {'R@5':>6s} {'R@10':>6s} | {'B: R@1':>6s} {'R@5':>6s} "
          f"{'R@10':>6s} | {'all: R@1':>8s} {'R@5':>6s} {'R@10':>6s} {'medr':>5s}")
    key = lambda r: r["R@1"] + r["R@5"] + r["R@10"]  # noqa: E731
    for depth, weight, a, b, al in sorted(rows, key=lambda r: -key(r[4]))[:15]:
        print(f"{depth:5d} {weight:6.1f} | {a['R@1']:6.3f} {a['R@5']:6.3f} {a['R@10']:6.3f} | {b['R@1']:6.3f} "
              f"{b['R@5']:6.3f} {b['R@10']:6.3f} | {al['R@1']:8.3f} {al['R@5']:6.3f} {al['R@10']:6.3f} "
              f"{al['median_rank']:5.0f}")
    best_a = max(rows, key=lambda r: key(r[2]))
    best_b = max(rows, key=lambda r: key(r[3]))
    print(f"chosen on A (depth {best_a[0]}, weight {best_a[1]}) scored on B: "
          f"{best_a[3]['R@1']:.3f} / {best_a[3]['R@5']:.3f} / {best_a[3]['R@10']:.3f}")
    print(f"chosen on B (depth {best_b[0]}, weight {best_b[1]}) scored on A: "
          f"{best_b[2]['R@1']:.3f} / {best_b[2]['R@5']:.3f} / {best_b[2]['R@10']:.3f}")
    cur = next((r for r in rows if r[0] == RERANK["depth"] and r[1] == RERANK["weight"]), None)
    if cur is not None:
        print(f"shipped RERANK (depth {cur[0]}, weight {cur[1]}): {cur[4]['R@1']:.3f} / {cur[4]['R@5']:.3f} / "
              f"{cur[4]['R@10']:.3f} (median rank {cur[4]['median_rank']:.0f})")


def FUSION_DEPTH() -> int:
    from imgsearch.search.settings import FUSION

    return int(FUSION["depth"])


def _ids_paths(lib):
    from sqlalchemy import select

    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        return list(s.execute(select(Photo.id, Photo.path).where(Photo.error.is_(None))))


if __name__ == "__main__":
    main()
