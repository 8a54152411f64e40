#!/usr/bin/env python
"""Choose the hybrid fusion (method, RRF k, per-signal weights) by text→image Recall@K.

Indexes the images of a COCO-style caption file into a library (or reuses one made by
`imgsearch evaluate-retrieval --library`), runs every reference caption through each signal once
(bm25, caption embeddings, photo embeddings), then scores every fusion setting offline on the
same ranked lists. Prints a table, best first, and the setting to put into library.FUSION.

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
    from imgsearch.library import FUSION

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


def _ids_paths(lib):
    from sqlalchemy import select

    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        return list(s.execute(select(Photo.id, Photo.path).where(Photo.error.is_(None))))


if __name__ == "__main__":
    main()
