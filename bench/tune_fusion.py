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
    from imgsearch.search.fuse import fuse

    refs = load_captions(args.captions)
    names, references = refs.file_names[:args.limit], refs.captions[:args.limit]
    paths = [str((Path(args.images) / n).resolve()) for n in names]
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; {len(paths)} photos")
    with Library(args.library) as lib:
        t0 = time.time()
        lib.index(paths, progress=False)
        print(f"index: {time.time() - t0:.1f} s")
        id_of = {h_path: pid for pid, h_path in _ids_paths(lib)}
        N = len(paths)
        queries = [(q, id_of[p]) for p, caps in zip(paths, references) for q in caps if p in id_of]
        t0 = time.time()
        qvecs = lib.embedder().embed([q for q, _ in queries])
        lists = []
        for (q, _), v in zip(queries, qvecs):
            lists.append(lib.ranked_lists(q, v, "hybrid", N))
        print(f"{len(queries)} queries, ranked lists in {time.time() - t0:.1f} s")

    def ranks_for(fused_lists):
        out = []
        for ranked, (_, true) in zip(fused_lists, queries):
            order = [i for i, _ in ranked]
            out.append(order.index(true) + 1 if true in order else N + 1)
        return recall_from_ranks(out)

    rows = []
    for signal in ("bm25", "caption", "image"):
        rows.append({"setting": f"{signal} alone", **ranks_for([l.get(signal, []) for l in lists])})
    for method, k_rrf in [("rrf", k) for k in (10, 30, 60)] + [("sum", 0)]:
        for wb, wc, wi in itertools.product((0.5, 1.0), (0.5, 1.0, 1.5), (0.5, 1.0, 1.5, 2.0)):
            w = {"bm25": wb, "caption": wc, "image": wi}
            fused = [fuse(l, {n: w[n] for n in l}, method=method, k_rrf=k_rrf or 60) for l in lists]
            rows.append({"setting": f"{method}{'' if method == 'sum' else f' k={k_rrf}'} w={wb}/{wc}/{wi}",
                         "method": method, "k_rrf": k_rrf, "weights": w, **ranks_for(fused)})
    rows.sort(key=lambda r: -(r["R@1"] + r["R@5"] + r["R@10"]))
    if args.json:
        print(json.dumps(rows, indent=1))
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
