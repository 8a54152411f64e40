"""The places pass of an index run: photos described before places existed (or under another
``places.PLACES_VERSION``) get their GPS position and place from their EXIF, without re-captioning.

Only the file's header is read (``decode.read_gps``: ``Image.open`` + EXIF, no pixels decoded), for the photos
the scan found; the photo's BM25 document is rewritten when its place words changed. Photos indexed by this
version need nothing here: their GPS is read with the pixels (``decode.open_photo``) and stored with their stat.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from imgsearch import places
from imgsearch.places import PLACES_VERSION
from imgsearch.search import bm25
from imgsearch.store import writes
from imgsearch.store.db import bump_revision
from imgsearch.store.models import Photo
from imgsearch.store.queries import not_at

if TYPE_CHECKING:  # pragma: no cover
    from imgsearch.indexer.plan import Plan
    from imgsearch.indexer.report import IndexReport

BATCH = 500


def stale_places(session, on_disk: set[str]) -> list[tuple[int, str]]:
    """(id, path) of the good photos found by the scan whose GPS was not read by this PLACES_VERSION."""
    q = select(Photo.id, Photo.path).where(Photo.error.is_(None), not_at(Photo.places_version, PLACES_VERSION))
    return [(pid, path) for pid, path in session.execute(q) if path in on_disk]


def place_stale(store, plan: "Plan", report: "IndexReport") -> set[int]:
    """Read the GPS of the stale photos of ``plan`` and store their places, BATCH photos a transaction; returns
    the ids whose BM25 documents changed. ``report.placed``: photos given a place."""
    from imgsearch.indexer.decode import read_gps

    with store.session() as s:
        todo = stale_places(s, plan.on_disk)
    touched: set[int] = set()
    for i in range(0, len(todo), BATCH):
        chunk = todo[i:i + BATCH]
        found = [(pid, read_gps(path)) for pid, path in chunk]
        if any(gps is not None for _, gps in found):
            places.gazetteer()   # loaded (~1 s, once) before the write lock is taken
        with store.write() as s:
            docs = [d for d in (writes.write_place(s, pid, gps) for pid, gps in found) if d is not None]
            if docs:
                bm25.upsert_documents(s, docs)
            bump_revision(s)
        touched.update(pid for pid, _ in docs)
        report.placed += len(docs)
    return touched
