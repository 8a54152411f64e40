#!/usr/bin/env python
"""Recall@1/5/10 of the real query path for sentence queries: every human caption of a COCO-style caption
file is run through ``Library.query(caption, k=10, mode=...)`` as a user would (fusion, re-ranking and the
relevance cut included), and ranks its own photo.

    python bench/sentence_queries.py --captions DEV.json --images DIR --library LIB.db \\
        --modes hybrid,hybrid_no_rerank,image,labels
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--library", required=True, help="indexed with the caption file's photos (index it first)")
    ap.add_argument("--modes", default="hybrid,hybrid_no_rerank")
    args = ap.parse_args()
    from imgsearch import Library
    from imgsearch.model.coco import load_captions
    from imgsearch.retrieval import recall_from_ranks

    refs = load_captions(args.captions)
    paths = [str((Path(args.images) / n).resolve()) for n in refs.file_names]
    with Library(args.library, create=False) as lib:
        for mode in args.modes.split(","):
            t, ranks, empty = time.time(), [], 0
            m, rerank = ("hybrid", False) if mode == "hybrid_no_rerank" else (mode, True)
            for p, cs in zip(paths, refs.captions):
                for q in cs:
                    hits = lib.query(q, k=10, mode=m, rerank=rerank)
                    empty += not hits
                    ranks.append(next((h.rank for h in hits if h.path == p), 11))
            r = recall_from_ranks(ranks)
            half = [recall_from_ranks(ranks[i::2])["R@1"] for i in (0, 1)]
            print(f"{mode:18s} R@1 {r['R@1']:.3f}  R@5 {r['R@5']:.3f}  R@10 {r['R@10']:.3f}  (R@1 on halves "
                  f"{half[0]:.3f} / {half[1]:.3f}; {len(ranks)} queries, {empty} empty, {time.time() - t:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
