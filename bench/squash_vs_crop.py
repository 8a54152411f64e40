#!/usr/bin/env python
"""Squash or centre-crop? Preprocessing of non-square photos, measured on Flickr8k dev.

The training photos are 224×224 squashed from their original (mostly 4:3 / 3:4, 500 px) Flickr
frames. Our users' photos keep their aspect ratio, so the question is which way to make them
square: squash the whole frame (as training did) or crop its centre (no distortion, loses the
edges). No captioned set of dev photos at their original aspect is available here, so this script
*re-creates* non-square frames: each dev photo is stretched back to ASPECT (default 4:3 landscape,
and 3:4 portrait), then preprocessed both ways and scored:

  * captions (shipped model, beam 3): corpus BLEU-4 and CIDEr-D against the 5 references;
  * photo embedding: text→image Recall@1/5/10 of the 5,000 dev captions over the 1,000 photos.

Caveat, stated with the numbers: "squash" of a re-stretched frame gives back (almost) the training
image, so where a dev photo's real original had another aspect than the one assumed, squash is
favoured; the crop numbers show what cropping away the edges costs the model.

    python bench/squash_vs_crop.py --captions ../shared/data/flickr8k/captions_dev.json \\
        --images ../shared/data/flickr8k/images
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--json", default=str(RESULTS / "squash_vs_crop.json"))
    args = ap.parse_args()

    import torch
    from PIL import Image

    from imgsearch.model.captioner import Captioner
    from imgsearch.model.coco import load_captions
    from imgsearch.model.metrics import corpus_scores
    from imgsearch.model.preprocess import fit_square, to_tensor
    from imgsearch.retrieval import recall_from_ranks
    from imgsearch.text.embed import TextEmbedder

    ds = load_captions(args.captions)
    names, refs = ds.file_names[:args.limit], ds.captions[:args.limit]
    cap = Captioner.load(device="cpu")
    emb = TextEmbedder.load()
    qv = emb.embed([q for r in refs for q in r])                       # (5N, 384)
    truth = np.repeat(np.arange(len(refs)), [len(r) for r in refs])
    size = cap.image_size
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; {len(names)} dev photos; model {cap.version}")
    out = {"photos": len(names), "model": cap.version, "rows": []}
    frames = {"original 224x224 (as trained)": None, "4:3 landscape (299x224)": (299, 224),
              "3:4 portrait (224x299)": (224, 299)}
    for frame, wh in frames.items():
        for mode in (("squash",) if wh is None else ("squash", "crop")):
            t0 = time.time()
            hyps, vecs = [], []
            for s in range(0, len(names), args.batch_size):
                batch = []
                for n in names[s:s + args.batch_size]:
                    with Image.open(Path(args.images) / n) as im:
                        im = im.convert("RGB")
                        if wh is not None:
                            im = im.resize(wh, Image.BICUBIC)
                        batch.append(to_tensor(fit_square(im, size, mode)))
                with torch.inference_mode():
                    ds_ = cap.describe(torch.stack(batch), beam=3, n_best=1)
                hyps += [d.caption for d in ds_]
                vecs += [d.image_embedding for d in ds_]
            sc = corpus_scores(dict(enumerate(hyps)), dict(enumerate(refs)))
            S = qv @ np.stack(vecs).T
            ranks = (S >= S[np.arange(len(truth)), truth][:, None]).sum(1)
            rec = recall_from_ranks(ranks.tolist())
            row = {"frame": frame, "mode": mode, "BLEU-4": sc["BLEU-4"], "CIDEr": sc["CIDEr"], **rec,
                   "seconds": time.time() - t0}
            out["rows"].append(row)
            print(f"{frame:32s} {mode:7s} BLEU-4 {sc['BLEU-4']:.4f} CIDEr {sc['CIDEr']:.4f}  image R@1/5/10 "
                  f"{rec['R@1']:.3f}/{rec['R@5']:.3f}/{rec['R@10']:.3f} medr {rec['median_rank']:.0f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
