#!/usr/bin/env python
"""Near-duplicates (`imgsearch duplicates --near`): which stored vector, at which cosine, tells an edited copy
of a photo from a different photo.

Each source photo gets four copies, made the way the tests make them: resized to 60 % of its size (Flickr8k's
500×375 stays above the model's 224 px input), re-encoded as JPEG quality 30, 5 % cropped off its sides (a
95 % window, seeded), and 25 % brighter; and a fifth, ``half``, resized to 50 % (250×188: below 224 px, so
the model sees it upscaled and blurred) to show where resizing stops being found. Every photo (sources
and copies) is decoded and described the way the indexer does it (indexer.decode: draft decode → squash to
224 → the encoder) and three vectors are compared:

* ``visual``  photos.visual_embedding (model/visual.py: mean-pooled head channels, randomly projected);
* ``image``   photos.image_embedding (model/projection.py: the photo in MiniLM space, what the captions say);
* ``layout``  the correlation of the photos' 16×16 colour layouts (search/duplicates.layout), read from the
              files when `duplicates --near` runs (nothing stored);
* ``combined`` what `duplicates --near` uses: the visual cosine, counted only where the layout correlation is
              at least LAYOUT_THRESHOLD (else -1);
* ``phash``   a 64-bit DCT pHash of the photo (32×32 grey, top-left 8×8 DCT, above the median) — not stored
              by the library: measured here to see whether it would be worth a migration; its "cosine" is
              1 - hamming/32 (so 1 = same hash, 0 = 32 bits differ).

For one transformation T the library is the N sources plus their N T-copies: a positive pair is (source,
its T-copy), every other pair of the 2N photos is a negative (a different photo). At a threshold t, recall is
the share of positive pairs whose cosine is ≥ t, precision TP / (TP + FP) over all pairs ≥ t. Sources:
real photos (``--images``, repeatable: Flickr8k dev, COCO dev) and drawn scenes of the same kind (tests/
shapes.py: a coloured circle, square or triangle at a random place and size; tests/photos.py's scenes), so
the negatives include many pairs of photos that look alike without being copies.

    python bench/near_duplicates.py --images ../shared/data/flickr8k/images --limit 200 \\
        --images ../shared/data/coco_dev/images --out bench/results/near_duplicates.txt
"""
from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

TRANSFORMS = ("resize", "jpeg30", "crop5", "bright", "half")
KINDS = ("visual", "image", "phash", "layout", "combined")


def transform(im, name: str, rng: random.Random):
    """``im`` (RGB) edited by ``name``: the copies the tests make (tests/test_duplicates.py)."""
    from PIL import Image, ImageEnhance

    w, h = im.size
    if name in ("resize", "half"):
        f = 0.6 if name == "resize" else 0.5
        return im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.LANCZOS), 90
    if name == "jpeg30":
        return im, 30
    if name == "crop5":
        cw, ch = round(w * 0.95), round(h * 0.95)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return im.crop((x, y, x + cw, y + ch)), 90
    if name == "bright":
        return ImageEnhance.Brightness(im).enhance(1.25), 90
    raise ValueError(name)


def phash(im) -> np.ndarray:
    """64 bits (bool) of a DCT pHash."""
    from PIL import Image

    a = np.asarray(im.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    n = np.arange(32)
    dct = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)      # (32, 32) DCT-II basis
    low = (dct @ a @ dct.T)[:8, :8].reshape(-1)
    return low > np.median(low[1:])


def sources(images: list[str], limit: int, drawn: int, seed: int):
    """(name, RGB image) of the source photos: real ones first, then drawn ones."""
    from PIL import Image

    import photos as test_photos
    import shapes

    rng = random.Random(seed)
    for folder in images:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        rng.shuffle(files)
        for p in files[:limit]:
            with Image.open(p) as im:
                yield f"real:{p.name}", im.convert("RGB")
    for i in range(drawn):
        colour, shape = rng.choice(list(shapes.COLOURS)), rng.choice(shapes.SHAPES)
        yield f"drawn:{colour}_{shape}_{i}", shapes.draw(colour, shape, rng, size=480)
    for kind in test_photos.KINDS:
        if kind != "noise":
            yield f"scene:{kind}", test_photos.draw_scene(kind, (640, 480))


def describe(cap, files: list[Path], batch: int = 16) -> dict[str, np.ndarray]:
    """{"visual", "image"}: (n, 384) vectors of ``files``, decoded as the indexer decodes them."""
    import torch

    from imgsearch.indexer.decode import open_photo, to_model_input

    out: dict[str, list] = {"visual": [], "image": []}
    for i in range(0, len(files), batch):
        x = torch.stack([to_model_input(open_photo(f, target=cap.image_size), cap.image_size, cap.resize)
                         for f in files[i:i + batch]])
        grid, _ = cap.encode(x)
        out["visual"] += [v for *_, v in cap.labels_from_grid(grid)]
        out["image"] += list(cap.embed_images(grid))
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def layout_sim(lay: np.ndarray) -> np.ndarray:
    """(n, n) search/duplicates.layout_match of every pair of (n, windows, d) layouts."""
    m = np.einsum("nvd,md->nmv", lay, lay[:, 0]).max(-1)      # [i, j]: a window of i against the whole j
    return np.maximum(m, m.T)


def measure(names, vecs: dict[str, dict[str, np.ndarray]], thresholds: dict[str, list[float]], group: str,
            layout_t: float):
    """{kind: {transform: [(t, precision, recall, fp)]}} for the sources whose name starts with ``group``
    ("" = all)."""
    keep = np.array([n.startswith(group) for n in names])
    res: dict = {}
    for kind in KINDS:
        res[kind] = {}
        n = int(keep.sum())
        for tr in TRANSFORMS:
            if kind != "combined":
                both = np.concatenate([vecs["orig"][kind][keep], vecs[tr][kind][keep]])
            if kind == "combined":
                lay = np.concatenate([vecs["orig"]["layout"][keep], vecs[tr]["layout"][keep]])
                vis = np.concatenate([vecs["orig"]["visual"][keep], vecs[tr]["visual"][keep]])
                sim = np.where(layout_sim(lay) >= layout_t, vis @ vis.T, -1.0)
            elif kind == "phash":
                b = both.astype(np.float32)
                ham = b @ (1 - b).T + (1 - b) @ b.T
                sim = 1 - ham / 32
            elif kind == "layout":
                sim = layout_sim(both)
            else:
                sim = both @ both.T
            iu = np.triu_indices(2 * n, 1)
            s = sim[iu]
            pos = (iu[1] - iu[0] == n) & (iu[0] < n)
            rows = []
            for t in thresholds[kind]:
                hit = s >= t
                tp, fp = int((hit & pos).sum()), int((hit & ~pos).sum())
                rows.append((t, tp / (tp + fp) if tp + fp else 1.0, tp / n, fp))
            res[kind][tr] = rows
            res[kind].setdefault("_stats", {})[tr] = (float(np.min(s[pos])), float(np.max(s[~pos])),
                                                      float(np.quantile(s[pos], 0.05)))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", action="append", default=[], help="a folder of real photos (repeatable)")
    ap.add_argument("--limit", type=int, default=200, help="photos taken from each --images folder")
    ap.add_argument("--drawn", type=int, default=120, help="drawn shapes (tests/shapes.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chosen", type=float, default=None, help="the visual threshold to report in detail "
                    "(default: imgsearch.search.duplicates.NEAR_THRESHOLD)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", default=None, help="an .npz of the model's vectors (made when missing; same "
                    "--images/--limit/--drawn/--seed only)")
    args = ap.parse_args()

    from imgsearch.model.captioner import Captioner
    from imgsearch.search.duplicates import layout

    t0 = time.perf_counter()
    cap = Captioner.load(None, device="cpu")
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="near_dups_"))
    names: list[str] = []
    files: dict[str, list[Path]] = {k: [] for k in ("orig", *TRANSFORMS)}
    hashes: dict[str, list] = {k: [] for k in files}
    from PIL import Image

    for i, (name, im) in enumerate(sources(args.images, args.limit, args.drawn, args.seed)):
        names.append(name)
        for tr in ("orig", *TRANSFORMS):
            edited, q = (im, 92) if tr == "orig" else transform(im, tr, rng)
            buf = io.BytesIO()
            edited.save(buf, format="JPEG", quality=q)
            path = tmp / f"{i}_{tr}.jpg"
            path.write_bytes(buf.getvalue())
            files[tr].append(path)
            with Image.open(path) as back:
                hashes[tr].append(phash(back))
    print(f"{len(names)} sources, {5 * len(names)} files made in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    vecs = {}
    cached = dict(np.load(args.cache)) if args.cache and Path(args.cache).exists() else {}
    for tr, fs in files.items():
        if f"{tr}.visual" in cached:
            vecs[tr] = {"visual": cached[f"{tr}.visual"], "image": cached[f"{tr}.image"]}
        else:
            vecs[tr] = describe(cap, fs)
        vecs[tr]["phash"] = np.stack(hashes[tr])
        vecs[tr]["layout"] = np.stack([layout(f) for f in fs])
    if args.cache:
        np.savez(args.cache, **{f"{tr}.{k}": v[k] for tr, v in vecs.items() for k in ("visual", "image")})
    print(f"described in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    from imgsearch.search.duplicates import LAYOUT_THRESHOLD, NEAR_THRESHOLD

    chosen = args.chosen if args.chosen is not None else NEAR_THRESHOLD
    sweep = [round(x, 3) for x in np.arange(0.80, 0.995, 0.01)]
    sweep = sorted(set(sweep + [round(x, 3) for x in np.arange(0.5, 0.8, 0.05)]))
    thresholds = {"visual": sorted(set(sweep + [chosen])), "image": sweep, "layout": sweep,
                  "combined": sorted(set(sweep + [chosen])),
                  "phash": [round(1 - b / 32, 4) for b in range(0, 17, 2)]}
    lines = [f"# bench/near_duplicates.py: {len(names)} sources "
             f"({sum(n.startswith('real:') for n in names)} real from {', '.join(args.images) or '-'}; "
             f"{sum(not n.startswith('real:') for n in names)} drawn), seed {args.seed}, "
             f"{time.perf_counter() - t0:.0f} s", ""]
    for group, label in (("", "all sources"), ("real:", "real photos only"), ("drawn:", "drawn shapes only")):
        res = measure(names, vecs, thresholds, group, LAYOUT_THRESHOLD)
        n = sum(x.startswith(group) for x in names)
        lines.append(f"## {label} ({n} sources; positives per transformation: {n}, negatives: {n * (2 * n - 1) - n})")
        for kind in KINDS:
            lines.append(f"### {kind}: lowest positive cosine / 5 % quantile of positives / highest negative")
            for tr in TRANSFORMS:
                lo, hi, q5 = res[kind]["_stats"][tr]
                lines.append(f"  {tr:7s} {lo:.3f} / {q5:.3f} / {hi:.3f}")
            lines.append(f"  sweep (threshold: precision recall false-positive-pairs, per transformation)")
            for j, t in enumerate(thresholds[kind]):
                cells = "  ".join(f"{tr} {res[kind][tr][j][1]:.3f} {res[kind][tr][j][2]:.3f} {res[kind][tr][j][3]:4d}"
                                  for tr in TRANSFORMS)
                mark = " <- chosen" if kind == "combined" and t == chosen else ""
                lines.append(f"  {t:.3f}  {cells}{mark}")
        lines.append("")
    j = thresholds["combined"].index(chosen)
    lines.append(f"## chosen (imgsearch duplicates --near): visual cosine >= {chosen} and layout correlation >= "
                 f"{LAYOUT_THRESHOLD}")
    for group, label in (("real:", "real photos"), ("drawn:", "drawn shapes"), ("", "all sources")):
        res = measure(names, vecs, thresholds, group, LAYOUT_THRESHOLD)
        lines.append(f"### {label}")
        for tr in TRANSFORMS:
            t, p, r, fp = res["combined"][tr][j]
            lines.append(f"  {tr:7s} precision {p:.3f}  recall {r:.3f}  false-positive pairs {fp}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
