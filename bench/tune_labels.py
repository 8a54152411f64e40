#!/usr/bin/env python
"""Choose how much the zero-shot label signal counts in a hybrid query, on two dev sets together.

The label vector (imgsearch/model/labels.py) helps queries about things ImageNet has classes for ("a pizza on
a plate", "umbrella") and hurts queries about people and actions ("a man in a red shirt climbs a rock"). Its
weight in the z-score fusion is therefore a function of the query: how close the query's MiniLM vector comes
to any class text (``labels.query_affinity``, a cosine):

    w_labels(q) = W * clip((affinity(q) - lo) / (hi - lo), 0, 1)

Per dev set (COCO-style captions: every caption is a query, its photo the target) this script computes each
signal's top ``--depth`` once through the library (bm25, caption, image, labels), then fuses offline exactly as
imgsearch.search.fuse's zsum does, for a grid of (W, lo, hi), and prints R@1/5/10 per set and on two halves of
each set's queries; the setting is chosen by the mean over sets of R@1+R@5+R@10, preferring one that is good on
every half.

    python bench/tune_labels.py --set flickr8k:/work/shared/data/flickr8k/captions_dev.json:/work/shared/data/flickr8k/images:/tmp/tl/f/library.db \
                                --set coco:/work/shared/data/coco_dev/captions_dev.json:/work/shared/data/coco_dev/images:/tmp/tl/c/library.db
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIGNALS = ("bm25", "caption", "image", "labels")

def base_weights() -> dict[str, float]:
    """The shipped weights of the other three signals (search/settings.py)."""
    from imgsearch.search.settings import FUSION

    return {k: v for k, v in FUSION["weights"].items() if k != "labels"}


def signal_lists(lib, queries: list[str], depth: int):
    """Per query: {signal: [(id, score)]} at ``depth``, and the query's label affinity."""
    from imgsearch.model.labels import query_affinity

    qvecs = lib.embedder().embed(queries)
    out, aff = [], []
    for q, v in zip(queries, qvecs):
        lists = {"bm25": lib.engine.bm25_search(q, depth)}
        for kind in ("caption", "image", "labels"):
            lists[kind] = lib.engine.dense_search(kind, v, depth)
        out.append(lists)
        aff.append(query_affinity(v))
    return out, np.asarray(aff)


def zscores(lists: dict, depth: int) -> dict[str, tuple[dict[int, float], float]]:
    """Per signal: ({id: z}, floor) over its top ``depth`` — as fuse._zsum computes them."""
    out = {}
    for name, lst in lists.items():
        items = lst[:depth]
        if not items:
            continue
        s = np.asarray([x for _, x in items], dtype=np.float64)
        mu, sd = s.mean(), s.std()
        z = {i: ((x - mu) / sd if sd > 0 else 0.0) for i, x in items}
        out[name] = (z, min(z.values()))
    return out


def rank_of(target: int, zs: dict, weights: dict) -> int:
    used = [(weights.get(n, 0.0), z, f) for n, (z, f) in sorted(zs.items()) if weights.get(n, 0.0) > 0]
    ids = {i for _, z, _ in used for i in z}
    if target not in ids:
        return 10**6
    tot = {i: sum(w * z.get(i, f) for w, z, f in used) for i in ids}
    t = tot[target]
    return 1 + sum(1 for i, s in tot.items() if s > t or (s == t and i < target))


def evaluate(data, weights_for) -> np.ndarray:
    """Ranks of each query's target under ``weights_for(query index) -> weights``."""
    return np.asarray([rank_of(tgt, zs, weights_for(j)) for j, (zs, tgt) in enumerate(data)])


def recall(r: np.ndarray) -> tuple[float, float, float]:
    return float(np.mean(r <= 1)), float(np.mean(r <= 5)), float(np.mean(r <= 10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, help="name:captions.json:images_dir:library.db")
    ap.add_argument("--depth", type=int, default=100, help="each signal's list depth (FUSION['depth'])")
    ap.add_argument("--json", help="write the grid here")
    args = ap.parse_args()
    from sqlalchemy import select

    from imgsearch import Library
    from imgsearch.model.coco import load_captions
    from imgsearch.store.models import Photo

    sets = {}
    for spec in args.set:
        name, caps, images, db = spec.split(":")
        refs = load_captions(caps)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with Library(db) as lib:
            lib.index([Path(images) / fn for fn in refs.file_names], progress=None)   # the set's photos only
            with lib.store.session() as s:
                ids = dict(s.execute(select(Photo.path, Photo.id)).all())
            queries, targets = [], []
            for fn, cs in zip(refs.file_names, refs.captions):
                pid = ids.get(str((Path(images) / fn).resolve()))
                if pid is None:
                    continue
                for c in cs:
                    queries.append(c)
                    targets.append(pid)
            lists, aff = signal_lists(lib, queries, args.depth)
        sets[name] = {"lists": lists, "aff": aff, "targets": targets, "queries": queries}
        print(f"{name}: {len(queries)} queries over {len(set(targets))} photos; lists in {time.time() - t0:.0f} s; "
              f"label affinity p10/p50/p90 {np.percentile(aff, [10, 50, 90]).round(3).tolist()}", flush=True)

    BASE = base_weights()
    for depth in (args.depth,):
        data = {n: [(zscores(l, depth), t) for l, t in zip(s["lists"], s["targets"])] for n, s in sets.items()}
        print(f"\n== z-scores over each signal's top {depth}")
        for n in sets:
            base = recall(evaluate(data[n], lambda j: BASE))
            lab = recall(evaluate(data[n], lambda j: {"labels": 1.0}))
            img = recall(evaluate(data[n], lambda j: {"image": 1.0}))
            print(f"{n}: hybrid today {base[0]:.3f}/{base[1]:.3f}/{base[2]:.3f}  image alone {img[0]:.3f}/{img[1]:.3f}/"
                  f"{img[2]:.3f}  labels alone {lab[0]:.3f}/{lab[1]:.3f}/{lab[2]:.3f}")
        rows = []
        for W, lo, hi in itertools.product((0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0), (0.3, 0.4, 0.5, 0.55),
                                           (0.55, 0.6, 0.7, 0.8, 1.01)):
            if hi <= lo or (W == 0 and (lo, hi) != (0.3, 0.55)):
                continue
            res = {}
            for n, s in sets.items():
                w = W * np.clip((s["aff"] - lo) / (hi - lo), 0, 1)
                r = evaluate(data[n], lambda j: dict(BASE, labels=float(w[j])))
                half = np.arange(len(r)) % 2 == 0
                res[n] = (recall(r), recall(r[half]), recall(r[~half]))
            score = float(np.mean([sum(v[0]) for v in res.values()]))
            worst_half = float(min(sum(h) for v in res.values() for h in v[1:]))
            rows.append((score, worst_half, W, lo, hi, res))
        rows.sort(key=lambda x: -x[0])
        print("W     lo    hi   | " + " | ".join(f"{n}: R@1  R@5  R@10 (halves R@1)" for n in sets) + " | mean sum")
        for score, wh, W, lo, hi, res in rows[:15] + [r for r in rows if r[2] == 0.0]:
            print(f"{W:<4}  {lo:<4}  {hi:<4} | " + " | ".join(
                f"{n}: {v[0][0]:.3f} {v[0][1]:.3f} {v[0][2]:.3f} ({v[1][0]:.3f}/{v[2][0]:.3f})" for n, v in res.items())
                + f" | {score:.3f}")
        if args.json:
            Path(args.json).write_text(json.dumps([{"W": W, "lo": lo, "hi": hi, "score": sc, "depth": depth,
                                                    "res": {n: v[0] for n, v in res.items()}}
                                                   for sc, _, W, lo, hi, res in rows]))


if __name__ == "__main__":
    main()
