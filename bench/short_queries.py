#!/usr/bin/env python
"""Recall@K of hybrid search, with and without re-ranking, for SHORT queries made from dev captions.

People type "black dog beach", not "A black dog is running along the beach ."; the dev captions used by
tune_fusion.py are the long form. Here each reference caption becomes its first N content words (the
caption's words minus imgsearch's stopwords, in order), and each is run through Library.query(k=10) as a
user would, once with and once without the caption-likelihood re-ranking.

    python bench/short_queries.py --captions ../shared/data/flickr8k/captions_dev.json \\
        --images ../shared/data/flickr8k/images --library /tmp/dev-library.db --words 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--library", required=True, help="a library holding the images (index it first, e.g. with "
                                                     "bench/tune_fusion.py)")
    ap.add_argument("--words", type=int, default=3)
    args = ap.parse_args()

    from imgsearch import Library
    from imgsearch.model.coco import load_captions
    from imgsearch.text.normalize import STOPWORDS, tokenize

    refs = load_captions(args.captions)
    ranks: dict[bool, list[int]] = {True: [], False: []}
    t0 = time.time()
    with Library(args.library, create=False) as lib:
        for name, caps in zip(refs.file_names, refs.captions):
            path = str((Path(args.images) / name).resolve())
            for c in caps:
                words = [w for w in tokenize(c) if w not in STOPWORDS][:args.words]
                q = " ".join(words) if words else c
                for rerank in (False, True):
                    hits = lib.query(q, k=10, rerank=rerank)
                    ranks[rerank].append(next((h.rank for h in hits if h.path == path), 11))
    print(f"{len(ranks[True])} queries of the first {args.words} content words of each caption "
          f"({time.time() - t0:.0f} s)")
    for rerank in (False, True):
        r = np.array(ranks[rerank])
        print(f"hybrid{'' if rerank else ' --no-rerank'}: R@1 {np.mean(r <= 1):.3f}  R@5 {np.mean(r <= 5):.3f}  "
              f"R@10 {np.mean(r <= 10):.3f}")


if __name__ == "__main__":
    main()
