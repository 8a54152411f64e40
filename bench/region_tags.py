#!/usr/bin/env python
"""Precision of region tags (classes by their best grid cell) against the human captions, by threshold.

A region tag is a class whose per-cell probability (imgsearch/model/labels.py) passes a threshold. It is
"right" when a word of the class name (normalised as BM25 normalises it) occurs in one of the photo's human
captions. Photo-level tags (the classifier on the mean of the cells, threshold 0.25) are measured the same
way for comparison. Libraries must hold the dev photos with their labels (index them with this version).

    python bench/region_tags.py --set flickr8k:CAPTIONS.json:IMAGES:LIBRARY.db --set coco:...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, help="name:captions.json:images_dir:library.db")
    args = ap.parse_args()
    from sqlalchemy import select

    from imgsearch import Library
    from imgsearch.model import labels
    from imgsearch.model.coco import load_captions
    from imgsearch.model.tags import load_tag_table, tags_from_logits  # noqa: F401
    from imgsearch.store.models import Photo, Tag
    from imgsearch.text.normalize import search_terms

    table = load_tag_table()
    name_terms = [set(search_terms(n)) for n in table.names]
    for spec in args.set:
        name, caps, images, db = spec.split(":")
        refs = load_captions(caps)
        words = {str((Path(images) / fn).resolve()): set(search_terms(" ".join(cs)))
                 for fn, cs in zip(refs.file_names, refs.captions)}
        with Library(db, create=False) as lib, lib.store.session() as s:
            rows = s.execute(select(Photo.id, Photo.path, Photo.labels).where(Photo.labels.is_not(None))).all()
            photo_tags: dict[int, set[str]] = {}
            for pid, term in s.execute(select(Tag.photo_id, Tag.term).where(Tag.kind == "tag")):
                photo_tags.setdefault(pid, set()).add(term)
        name_set = set(table.names)
        hit = {t: [0, 0] for t in THRESHOLDS}
        photos_with = {t: 0 for t in THRESHOLDS}
        g_hit = [0, 0]
        for pid, path, blob in rows:
            cap_words = words.get(path)
            if cap_words is None:
                continue
            ids, p = labels.unpack(blob)
            for t in THRESHOLDS:
                got = [c for c, q in zip(ids.tolist(), p.tolist()) if q >= t][:labels.REGION_TOP]
                photos_with[t] += bool(got)
                for c in got:
                    hit[t][0] += bool(name_terms[c] & cap_words)
                    hit[t][1] += 1
            for term in photo_tags.get(pid, ()):
                if term in name_set:
                    g_hit[0] += bool(set(search_terms(term)) & cap_words)
                    g_hit[1] += 1
        n = len(rows)
        print(f"\n{name}: {n} photos with labels; photo-level class tags (p >= 0.25): precision "
              f"{g_hit[0] / max(g_hit[1], 1):.3f} over {g_hit[1]} tags")
        print("threshold  precision  tags  photos with one")
        for t in THRESHOLDS:
            print(f"  {t:<8} {hit[t][0] / max(hit[t][1], 1):9.3f}  {hit[t][1]:5d}  {photos_with[t] / max(n, 1):.2f}")


if __name__ == "__main__":
    main()
