#!/usr/bin/env python
"""Generate imgsearch/model/data/imagenet_label_vectors.npy: the MiniLM embedding of a text per ImageNet class.

The texts are the class names of the shipped tag table (imgsearch/model/data/imagenet_tags.json) in a prompt;
``{name}`` is the class name, ``{kind}`` its most specific hypernym (or "thing"). The vectors are embedded with
the pinned all-MiniLM-L6-v2 (imgsearch.text.embed) and stored as float16 (768 KB), in class-index order.

    python tools/make_label_vectors.py                          # the shipped prompt
    python tools/make_label_vectors.py --prompt "{name}" --out /tmp/v.npy
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of a {name}."


def class_texts(prompt: str = PROMPT) -> list[str]:
    entries = json.loads((ROOT / "imgsearch/model/data/imagenet_tags.json").read_text("utf-8"))
    return [prompt.format(name=e["name"], kind=(e.get("hypernyms") or ["thing"])[0]) for e in entries]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--out", default=str(ROOT / "imgsearch/model/data/imagenet_label_vectors.npy"))
    args = ap.parse_args()
    from imgsearch.text.embed import TextEmbedder

    texts = class_texts(args.prompt)
    vecs = TextEmbedder.load().embed(texts).astype(np.float16)
    np.save(args.out, vecs, allow_pickle=False)
    print(f"{len(texts)} class texts ({texts[0]!r} ...) → {args.out} {vecs.shape} {vecs.dtype}")


if __name__ == "__main__":
    main()
