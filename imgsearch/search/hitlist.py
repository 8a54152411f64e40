"""Hits from a ranking: what a result shows of each photo, read from the store a chunk at a time.

    details = Details(store)
    details.ahead(overlap, ids)       # optional: read these photos' rows on a background worker
    make_hits(details, ranked, k, collapse=Collapse(allowed))     # [Hit], best first

A hit carries the photo's path, best caption, keywords and tags, date, exact copies and the text read in it
(OCR): three queries per chunk (the photos table, copy groups, tags; plain SQL: store/hot_reads.py). :class:`Details` keeps what one query
has read, so a photo is read once however many times the ranking is walked, and can read ahead: the engine
starts the rows of the photos being re-ranked on its background worker while the re-ranker scores them (a
large library's rows are random reads from a file bigger than the page cache: ~3 ms at 1M photos). A
ranked photo whose row is gone or failed, or whose file no longer exists, is skipped; exact copies are
one hit (search/duplicates.py).
"""
from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

from imgsearch.hits import Hit
from imgsearch.search.dates import iso, photo_date
from imgsearch.search.duplicates import Collapse
from imgsearch.store import hot_reads

log = logging.getLogger(__name__)


class PhotoRow(NamedTuple):
    path: str
    caption: str | None
    taken_at: object            # datetime | None (EXIF date taken)
    mtime_ns: int | None
    ocr_text: str | None
    group: list | None          # [(id, path)] of its good exact copies, itself included; None: no copy
    tags: list[str]
    keywords: list[str]


def read_rows(store, ids: Sequence[int]) -> dict[int, PhotoRow | None]:
    """{id: PhotoRow, or None for an id with no good photo} for ``ids``, in three queries."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return {}
    with hot_reads.cursor(store) as cur:
        rows = hot_reads.photo_rows(cur, ids)
        good = list(rows)
        groups = hot_reads.copy_groups(cur, good)
        terms = hot_reads.terms(cur, good)
    out: dict[int, PhotoRow | None] = dict.fromkeys(ids)
    for i, (path, caption, taken, mtime, ocr) in rows.items():
        out[i] = PhotoRow(path, caption, taken, mtime, ocr, groups.get(i), terms[i]["tag"], terms[i]["keyword"])
    return out


class Details:
    """The photo rows one query has read (``read_rows``), and those being read ahead on a worker."""

    def __init__(self, store):
        self.store = store
        self.rows: dict[int, PhotoRow | None] = {}
        self._ahead = None               # a Future of read_rows, or None

    def ahead(self, overlap, ids: Sequence[int]) -> None:
        """Start reading ``ids`` on the worker ``overlap(fn, *args)`` gives (a Future, or None when it is
        busy: the rows are then read when needed)."""
        if self._ahead is None:
            self._ahead = overlap(read_rows, self.store, [i for i in ids if i not in self.rows])

    def join(self) -> None:
        """Wait for the rows being read ahead (a failure there only means reading them again here)."""
        fut, self._ahead = self._ahead, None
        if fut is not None:
            try:
                self.rows.update(fut.result())
            except Exception as e:  # noqa: BLE001 - read again in the query's own thread, which reports errors
                log.debug("reading hit rows ahead failed: %s: %s", type(e).__name__, e)

    def get(self, ids: Sequence[int]) -> dict[int, PhotoRow | None]:
        """The rows of ``ids`` (read now when not read yet)."""
        self.join()
        missing = [i for i in ids if i not in self.rows]
        if missing:
            self.rows.update(read_rows(self.store, missing))
        return {i: self.rows[i] for i in ids}


def make_hits(details: Details, ranked: Sequence[tuple[int, float]], k: int, start: int = 0,
              collapse: Collapse | None = None) -> list[Hit]:
    """:class:`Hit`s for the first ``k`` ranked ids whose file still exists, best first, ranked from
    ``start + 1``; exact copies of one photo are one hit (``collapse``: what this query showed already)."""
    collapse = Collapse() if collapse is None else collapse
    hits: list[Hit] = []
    pos = 0
    while len(hits) < k and pos < len(ranked):
        chunk = ranked[pos:pos + max(k * 2, 16)]
        pos += len(chunk)
        rows = details.get([i for i, _ in chunk])
        keep = []                 # (hit id, score, other copies' paths): one hit per group of exact copies
        for i, sc in chunk:
            if len(keep) >= k - len(hits):
                break
            row = rows[i]
            got = collapse.take(i, row.path, row.group) if row is not None else None
            if got is not None:
                keep.append((got[0], sc, got[2]))
        shown = details.get([hid for hid, _, _ in keep])      # a group's hit may be another copy than the ranked one
        for hid, sc, copies in keep:
            row = shown[hid]
            if row is None:       # that copy went away between the two reads
                continue
            taken, source = photo_date(row.taken_at, row.mtime_ns)
            hits.append(Hit(path=row.path, score=float(sc), caption=row.caption or "", keywords=row.keywords,
                            id=hid, tags=row.tags, rank=start + len(hits) + 1, taken_at=iso(taken),
                            date_source=source, copies=copies, ocr_text=row.ocr_text))
    return hits
