#!/usr/bin/env python
"""Choose the hybrid fusion (method, RRF k, per-signal weights) by text→image Recall@K.

Indexes the images of a COCO-style caption file into a library (or reuses one made by
`imgsearch evaluate-retrieval --library`), runs every reference caption through each signal once
(bm25, caption embeddings, photo embeddings), then scores every fusion setting offline on the
same ranked lists. Prints a table, best first, and the setting to put into imgsearch/search/settings.py FUSION.

    python bench/tune_fusion.py --captions ../shared/data/flickr8k/captions_dev.json \\
        --images ../shared/data/flickr8k/images --library /tmp/dev-library.db
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
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

    # what the Library fuses for a k=10 query: each signal's top n = max(k * overfetch, k + 20)
    from imgsearch.search.settings import FUSION

    n_list = max(10 * FUSION["overfetch"], 30)
    ranks = {sig: rank_matrix(scores[sig]) for sig in signals}
    present = {sig: ranks[sig] <= n_list for sig in signals}
    minmax, zs = {}, {}
    for sig in signals:
        sc = np.where(present[sig], scores[sig].astype(np.float64), np.nan)
        lo, hi = np.nanmin(sc, 1, keepdims=True), np.nanmax(sc, 1, keepdims=True)
        minmax[sig] = np.nan_to_num((sc - lo) / np.where(hi > lo, hi - lo, 1.0), nan=0.0)
        mu, sd = np.nanmean(sc, 1, keepdims=True), np.nanstd(sc, 1, keepdims=True)
        z = (sc - mu) / np.where(sd > 0, sd, 1.0)
        zs[sig] = np.where(present[sig], z, np.nanmin(z, 1, keepdims=True))

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
    print(f"{len(rows) - len(signals)} fusion settings on the top {n_list} of each signal (as Library.query(k=10) "
          "fuses them); median rank is approximate beyond that")
    print(f"{'setting':40s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'medr':>5s}")
    singles = [r for r in rows if r["setting"].endswith("alone")]
    for r in rows[:15] + singles:
        print(f"{r['setting']:40s} {r['R@1']:6.3f} {r['R@5']:6.3f} {r['R@10']:6.3f} {r['median_rank']:5.0f}")
    best = next(r for r in rows if "method" in r)
    print("best:", json.dumps({"method": best["method"], "k_rrf": best["k_rrf"] or 60, "weights": best["weights"]}))
    if args.rerank:
        w = FUSION["weights"]
        if FUSION["method"] != "zsum":
            raise SystemExit("--rerank simulates the shipped zsum fusion only")
        fused = sum(w.get(s, 1.0) * zs[s] for s in signals)
        tune_rerank(args, fused, true, queries, col)


def tune_rerank(args, fused: np.ndarray, true: np.ndarray, queries, col: dict) -> None:
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
    cache = Path(args.library).with_suffix(f".rerank{D}.npz")
    if cache.exists():
        ll = np.load(cache)["ll"]
    else:
        t0 = time.time()
        with Library(args.library) as lib:
            scorer = lib.engine.scorer()
            if scorer is None:
                raise SystemExit("this library has no re-ranking scorer (index it with a Transformer checkpoint)")
            blobs = stored_cells(lib.store, ids.tolist(), scorer.version)
            cells = unpack_cells([blobs[int(i)] for i in ids])                  # (N, 49, D) in column order
            ll = np.full((Q, D), np.nan, dtype=np.float32)
            for qi, (q, _) in enumerate(queries):
                tok = scorer.tokens(q)
                if tok is not None:
                    ll[qi] = scorer.score(tok, cells[cand[qi]])
        np.savez(cache, ll=ll)
        print(f"log-likelihoods of {Q} queries × top {D}: {time.time() - t0:.1f} s")

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
    print(f"\ncaption-likelihood re-ranking of the shipped fusion (zsum {FUSION_W()}); no re-ranking: "
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


def FUSION_W() -> str:
    from imgsearch.search.settings import FUSION

    return "/".join(f"{FUSION['weights'][s]:g}" for s in ("bm25", "caption", "image"))


def _ids_paths(lib):
    from sqlalchemy import select

    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        return list(s.execute(select(Photo.id, Photo.path).where(Photo.error.is_(None))))


if __name__ == "__main__":
    main()
