"""The library the date, exclusion and combination tests search (test_dates.py, test_exclude_combine.py).

Photos with EXIF dates written by the test (DateTimeOriginal) and photos without EXIF whose file mtime is set
with os.utime; indexed for real (tiny captioner), then given known captions, tags and embeddings through the
store (serve_library.relabel), so that the real query path has deterministic answers.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from libtools import tiny_captioner
from photos import make_photo
from serve_library import relabel

INDEX_KW = dict(batch_size=8, workers=0, progress=False)
# file name → (drawn kind, caption, EXIF date taken or None, file mtime or None)
PHOTOS = {
    "dog_beach.jpg": ("red_circle", "a dog on the beach", datetime(2023, 12, 31, 23, 59, 59), None),
    "dog_park.jpg": ("blue_square", "a dog in the park", datetime(2024, 1, 1, 0, 0, 0), None),
    "cat_beach.jpg": ("green_triangle", "a cat on the beach", datetime(2024, 6, 30, 12, 0, 0), None),
    "dogs_beaches.jpg": ("stripes", "two dogs running on sandy beaches", datetime(2024, 7, 1, 0, 0, 0), None),
    "car.jpg": ("checker", "a red car on a street", None, datetime(2022, 3, 10, 9, 0, 0)),
    "dog_shirt.jpg": ("sky", "a dog wearing a t-shirt", None, datetime(2024, 6, 15, 12, 0, 0)),
    "dog_sofa.jpg": ("marker", "a dog asleep on a sofa", None, datetime(2021, 5, 1, 8, 0, 0)),
}
REGION_TAG = ("dog_sofa.jpg", "seashore")      # a region tag only this photo has


def build(base: Path) -> tuple[Path, Path, dict[str, int]]:
    """(db, pics, {file name: photo id})."""
    import sqlite3

    from sqlalchemy import select

    from imgsearch import Library
    from imgsearch.store.db import bump_revision
    from imgsearch.store.models import Photo
    from imgsearch.store.writes import read_terms, rebuild_search_text, set_terms

    pics = base / "pics"
    for name, (kind, _, taken, mtime) in PHOTOS.items():
        p = make_photo(pics / name, kind=kind, size=(160, 120), taken_at=taken)
        if mtime is not None:
            os.utime(p, (mtime.timestamp(), mtime.timestamp()))
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
        relabel(lib, {str(pics / name): v[1] for name, v in PHOTOS.items()})
        with lib.store.write() as s:
            pid = s.execute(select(Photo.id).where(Photo.path == str(pics / REGION_TAG[0]))).scalar_one()
            set_terms(s, pid, read_terms(s, pid) + [("region", REGION_TAG[1], 0.3)])
            s.flush()
            rebuild_search_text(s)
            bump_revision(s)
        lib.refresh_caches()
    with sqlite3.connect(db) as c:
        ids = {os.path.basename(p): i for i, p in c.execute("SELECT id, path FROM photos")}
    return db, pics, ids


def names(hits) -> list[str]:
    return [os.path.basename(h.path) for h in hits]
