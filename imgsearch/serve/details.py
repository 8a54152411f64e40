"""What the web app needs from a library beyond ``Library.query``/``status``/``errors``.

* :func:`photo_details` — everything stored about one photo (all captions with scores, tags,
  keywords, EXIF date, place and GPS position, text read in it (OCR), size, path, content hash).
* :func:`similar` — "more like this": ``Library.query(like=id)`` without the photo itself, re-ranked
  from 1, for an id that must name a good photo of the library.
* :func:`count_under` and :func:`folders` — for the folder filter (its check, and its suggestions).

All read the store through its public models and sessions.
"""
from __future__ import annotations

import os
from typing import Any

from imgsearch.errors import NotFoundError


class PhotoNotFound(NotFoundError):
    """No good (indexed, not failed) photo has this id: HTTP 404."""

    def __init__(self, photo_id: int | str):
        super().__init__(f"no photo with id {photo_id} in the library")
        self.photo_id = photo_id


def _iso(dt) -> str | None:
    return dt.isoformat() if dt is not None else None


def photo_details(lib, photo_id: int) -> dict[str, Any]:
    """All stored facts about one indexed photo; :class:`PhotoNotFound` for unknown or failed ids."""
    from sqlalchemy import select

    from imgsearch.store.models import Caption, Photo, Tag

    with lib.store.session() as s:
        p = s.execute(select(Photo).where(Photo.id == photo_id, Photo.error.is_(None))).scalar_one_or_none()
        if p is None:
            raise PhotoNotFound(photo_id)
        captions = [{"rank": c.rank, "text": c.text, "score": float(c.score)} for c in s.execute(
            select(Caption).where(Caption.photo_id == photo_id).order_by(Caption.rank)).scalars()]
        tags, keywords = [], []
        for kind, term, score in s.execute(
            select(Tag.kind, Tag.term, Tag.score).where(Tag.photo_id == photo_id)
            .order_by(Tag.kind, Tag.score.desc(), Tag.pos)
        ):
            if kind == "tag":
                tags.append({"term": term, "score": float(score)})
            else:
                keywords.append(term)
        return {
            "id": p.id,
            "path": p.path,
            "name": os.path.basename(p.path),
            "folder": p.folder,
            "exists": os.path.isfile(p.path),
            "caption": p.caption or "",
            "captions": captions,
            "tags": tags,
            "keywords": keywords,
            "taken_at": _iso(p.taken_at),
            "place": p.place,                     # nearest GeoNames place of its EXIF GPS (imgsearch/places.py)
            "gps": [p.gps_lat, p.gps_lon] if p.gps_lat is not None and p.gps_lon is not None else None,
            "ocr_text": p.ocr_text or None,       # the text read in the photo (index --ocr: indexer/ocr.py)
            "width": p.width,
            "height": p.height,
            "size": p.size,
            "content_hash": p.content_hash,
            "model_version": p.model_version,
            "indexed_at": _iso(p.indexed_at),
            "has_image_embedding": p.image_embedding is not None,
        }


def similar(lib, photo_id: int, k: int = 24, folder: str | None = None, **filters):
    """Photos like ``photo_id`` (itself excluded), best first, as ``Hit``s — ``Library.query(like=id)``,
    only under ``folder`` (an absolute folder as :func:`imgsearch.paths.resolve_root` gives) when given;
    ``filters``: Library.query's ``after`` / ``before`` / ``sort``."""
    from sqlalchemy import select

    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        row = s.execute(select(Photo.id, Photo.path).where(Photo.id == photo_id, Photo.error.is_(None))).first()
        if row is None:
            raise PhotoNotFound(photo_id)
    k = int(k)
    if k < 1:
        return []
    # the photo itself is left out, also when one of its exact copies is the hit (search/duplicates.py)
    hits = [h for h in lib.query(like=int(photo_id), k=k + 1, in_folder=folder, **filters)
            if h.id != photo_id and row.path not in h.copies][:k]
    for rank, h in enumerate(hits, 1):
        h.rank = rank
    return hits


def count_under(lib, folder: str) -> int:
    """Indexed photos at or below the absolute ``folder``."""
    from sqlalchemy import func, select

    from imgsearch.store.queries import under_clause
    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        return int(s.execute(select(func.count()).select_from(Photo)
                             .where(under_clause(Photo.path, folder), Photo.error.is_(None))).scalar_one())


def folders(lib, limit: int = 2000) -> tuple[list[str], bool]:
    """(folders, truncated): the indexed roots first, then every folder holding photos, by path."""
    import json

    from sqlalchemy import select

    from imgsearch.store.models import IndexRun, Photo

    with lib.store.session() as s:
        held = list(s.execute(select(Photo.folder).where(Photo.error.is_(None)).distinct()
                              .order_by(Photo.folder).limit(limit + 1)).scalars())
        roots: list[str] = []
        for (raw,) in s.execute(select(IndexRun.roots).order_by(IndexRun.id.desc()).limit(50)):
            try:
                for r in json.loads(raw or "[]"):
                    if isinstance(r, str) and r not in roots:
                        roots.append(r)
            except ValueError:
                continue
    truncated = len(held) > limit
    held = held[:limit]
    sep = os.sep
    roots = sorted(r for r in roots if any(f == r or f.startswith(r.rstrip(sep) + sep) for f in held))
    out = roots + [f for f in held if f not in roots]
    return out[:limit], truncated
