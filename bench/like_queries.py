#!/usr/bin/env python
"""Query by example (`--like`): find a photo from a crop of it, for several mixes of the like-query signals.

For each photo of a COCO-style caption file (indexed in the library), a crop of it — a random window of
``--crop`` of its width and height (seeded), so the subject moves and part of the scene goes — is written
outside the library and used as the query photo (not indexed: its vectors are computed as `imgsearch query
--like PHOTO` computes them). Each signal's top ``--depth`` is fused as the engine fuses a like query
(search/fuse.fuse_lists); the rank of the original photo gives R@1/R@5/R@10 per weight mix.

    python bench/like_queries.py --captions DEV.json --images DIR --library LIB.db [--limit 300]
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--library", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--crop", type=float, default=0.7)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from PIL import Image
    from sqlalchemy import select

    from imgsearch import Library
    from imgsearch.model.coco import load_captions
    from imgsearch.search.fuse import fuse_lists
    from imgsearch.store.models import Photo

    refs = load_captions(args.captions)
    names = refs.file_names[:args.limit] if args.limit else refs.file_names
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="like_"))
    with Library(args.library, create=False) as lib:
        with lib.store.session() as s:
            ids = dict(s.execute(select(Photo.path, Photo.id)).all())
        cases = []
        for n in names:
            src = (Path(args.images) / n).resolve()
            if str(src) not in ids:
                continue
            im = Image.open(src).convert("RGB")
            w, h = im.size
            cw, ch = int(w * args.crop), int(h * args.crop)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            dst = tmp / f"crop_{Path(n).stem}.jpg"
            im.crop((x, y, x + cw, y + ch)).save(dst, quality=90)
            vecs = lib.engine.photo_vectors(dst)
            lists = {kind: lib.engine.dense_search(kind, v, args.depth) for kind, v in vecs.items()}
            cases.append((ids[str(src)], lists))
    print(f"{len(cases)} crops ({args.crop:.0%} windows) of {args.captions}")
    print("caption image labels |  R@1    R@5   R@10")
    for wc, wi, wl in itertools.product((1.0,), (1.0, 2.0), (0.0, 0.5, 1.0, 2.0)):
        weights = {"caption": wc, "image": wi, "labels": wl}
        ranks = []
        for target, lists in cases:
            use = {k: v for k, v in lists.items() if weights.get(k, 0) > 0}
            fused = [i for i, _ in fuse_lists(use, weights)]
            ranks.append(fused.index(target) + 1 if target in fused else 10**6)
        r = np.asarray(ranks)
        print(f"{wc:<7} {wi:<5} {wl:<6} | {np.mean(r <= 1):.3f}  {np.mean(r <= 5):.3f}  {np.mean(r <= 10):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
