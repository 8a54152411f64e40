#!/usr/bin/env python
"""Query by example (`--like`): how much the visual vector (model/visual.py) adds, for several weights.

Two measures on a COCO-style caption file, each photo's vectors computed the way `imgsearch query --like
PHOTO` computes them for a photo that is not indexed (QueryEngine.photo_vectors: decode, describe, embed):

* **crop**: a random window of ``--crop`` of each photo's width and height (seeded) is the query; the rank of
  its photo among all photos gives R@1/5/10 (also R@10 on the even and odd halves of the photos);
* **same thing**: a photo relevant to a one-word dev query (bench/shortq.py: at least 2 of its 5 captions name
  the noun) is the query; the other photos relevant to that noun are the targets; mAP over the nouns (at most
  20 query photos a noun).

Each signal's top ``--depth`` (exact cosine over all photos) is fused as the engine fuses a like query
(search/fuse.fuse_lists, z-scores). The vectors are cached in ``--cache`` (an .npz) so a rerun only fuses.

    python bench/like_visual.py --captions ../shared/data/coco_dev/captions_dev.json \\
        --images ../shared/data/coco_dev/images --cache /tmp/like_visual_coco.npz
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

KINDS = ("caption", "image", "labels", "visual")
BASE = {"caption": 1.0, "image": 2.0, "labels": 0.5}


def compute(captions: str, images: str, limit: int | None, crop: float, seed: int) -> dict[str, np.ndarray]:
    from PIL import Image

    from imgsearch import Library
    from imgsearch.model.coco import load_captions

    names = load_captions(captions).file_names[:limit]
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="like_visual_"))
    out: dict[str, list] = {f"{w}{k}": [] for w in ("", "c_") for k in KINDS}
    with Library(tmp / "library.db") as lib:                  # empty: every photo is described as new
        for n, name in enumerate(names):
            src = Path(images) / name
            with Image.open(src) as im:
                im = im.convert("RGB")
                w, h = im.size
                cw, ch = int(w * crop), int(h * crop)
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                im.crop((x, y, x + cw, y + ch)).save(tmp / "crop.jpg", quality=90)
            for prefix, path in (("", src), ("c_", tmp / "crop.jpg")):
                vecs = lib.engine.photo_vectors(path)
                for k in KINDS:
                    out[prefix + k].append(vecs[k])
            if n % 100 == 0:
                print(f"  described {n}/{len(names)}", file=sys.stderr, flush=True)
    return {"names": np.array(names), **{k: np.stack(v).astype(np.float32) for k, v in out.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--cache", required=True, help="an .npz of the computed vectors (made when missing)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--crop", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default="0,0.5,1,1.5,2", help="visual weights to try beside caption/image/labels")
    args = ap.parse_args()
    import shortq
    from short_queries import machine

    from imgsearch.search.fuse import fuse_lists

    cache = Path(args.cache)
    if not cache.exists():
        np.savez(cache, **compute(args.captions, args.images, args.limit, args.crop, args.seed))
    d = np.load(cache)
    names = [str(n) for n in d["names"]]
    n = len(names)
    sig = {k: d[k] for k in KINDS}
    crops = {k: d["c_" + k] for k in KINDS}
    where = {str((Path(args.images) / name).resolve()): i for i, name in enumerate(names)}
    groups = []
    for q in shortq.build_queries(args.captions, args.images):
        rel = [where[p] for p in q["relevant"] if p in where]
        if q["kind"] == "one" and len(rel) >= 2:
            groups.append(rel)

    def top(kind: str, qv: np.ndarray, exclude: int | None = None):
        s = sig[kind] @ qv
        if exclude is not None:
            s[exclude] = -np.inf
        idx = np.argsort(-s, kind="stable")[:args.depth]
        return [(int(i), float(s[i])) for i in idx]

    def ranked(weights: dict[str, float], vecs: dict[str, np.ndarray], exclude: int | None = None) -> list[int]:
        use = {k: w for k, w in weights.items() if w > 0}
        return [i for i, _ in fuse_lists({k: top(k, vecs[k], exclude) for k in use}, use)]

    print(machine())
    print(f"{args.captions}: {n} photos, crops of {args.crop:.0%} windows, {len(groups)} same-noun groups")
    print("weights                                               | crop R@1  R@5    R@10  (halves R@10) | same-thing mAP")
    mixes = [dict(BASE, visual=float(w)) for w in args.weights.split(",")]
    mixes += [{"image": 1.0}, {"visual": 1.0}]
    halves = (np.arange(n) % 2 == 0, np.arange(n) % 2 == 1)
    for weights in mixes:
        ranks = []
        for i in range(n):
            order = ranked(weights, {k: crops[k][i] for k in KINDS})
            ranks.append(order.index(i) + 1 if i in order else 10**6)
        r = np.asarray(ranks)
        aps = []
        for rel in groups:
            aps.append(np.mean([shortq.average_precision(ranked(weights, {k: sig[k][q] for k in KINDS}, exclude=q),
                                      {x for x in rel if x != q}) for q in rel[:20]]))
        label = " ".join(f"{k}={w:g}" for k, w in weights.items())
        h = " ".join(f"{np.mean(r[m] <= 10):.3f}" for m in halves)
        print(f"{label:53s} | {np.mean(r <= 1):.3f}  {np.mean(r <= 5):.3f}  {np.mean(r <= 10):.3f}  ({h}) | "
              f"{np.mean(aps):.3f}", flush=True)


if __name__ == "__main__":
    main()
