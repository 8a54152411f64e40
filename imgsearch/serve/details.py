"""What the web app needs from a library beyond ``Library.query``/``status``/``errors``.

* :func:`photo_details` — everything stored about one photo (all captions with scores, tags,
  keywords, EXIF date, size, path, content hash).
* :func:`similar` — "more like this": the photo's own caption embedding (and image embedding, when
  the checkpoint wrote one) searched against the library's FAISS indexes, fused like a dense query.

Both read the store through its public models/sessions. ``similar`` uses the library's own vector
caches (``Library._vector_index``) and row builder (``Library._hits``) so that results look and rank
exactly like query results; the lead may move both into ``Library`` (``photo(id)``,
``query(..., like=id)``).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

EMBED_DIM = 384


class PhotoNotFound(LookupError):
    pass


def _iso(dt) -> str | None:
    return dt.isoformat() if dt is not None else None


def photo_details(lib, photo_id: int) -> dict[str, Any]:
    """All stored facts about one indexed photo; :class:`PhotoNotFound` for unknown or failed ids."""
    from sqlalchemy import literal_column, select

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
            .order_by(Tag.kind, Tag.score.desc(), literal_column("tags.rowid"))
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
            "width": p.width,
            "height": p.height,
            "size": p.size,
            "content_hash": p.content_hash,
            "model_version": p.model_version,
            "indexed_at": _iso(p.indexed_at),
            "has_image_embedding": p.image_embedding is not None,
        }


def _vector(blob: bytes | None) -> np.ndarray | None:
    if blob is None:
        return None
    v = np.frombuffer(blob, dtype="<f4")
    if v.shape[0] != EMBED_DIM or not np.all(np.isfinite(v)):
        return None
    return v.astype(np.float32)


def _folder_ids(lib, folder: str | None) -> set[int] | None:
    if folder is None:
        return None
    from sqlalchemy import select

    from imgsearch.indexer.pipeline import under_clause
    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        return set(s.execute(select(Photo.id).where(under_clause(Photo.path, folder),
                                                    Photo.error.is_(None))).scalars())


def similar(lib, photo_id: int, k: int = 24, in_folder: str | None = None):
    """Photos like ``photo_id`` (itself excluded), best first, as ``Hit``s.

    Ranked lists: cosine of the photo's caption embedding with every caption embedding, and of its
    image embedding with every image embedding (when it has one); fused with the library's dense
    fusion weights (RRF). ``in_folder`` (an absolute folder) restricts the results."""
    from sqlalchemy import func, select

    from imgsearch.library import FUSION
    from imgsearch.search.fuse import fuse
    from imgsearch.store.models import Photo

    with lib.store.session() as s:
        row = s.execute(select(Photo.caption_embedding, Photo.image_embedding)
                        .where(Photo.id == photo_id, Photo.error.is_(None))).first()
        total = int(s.execute(select(func.count()).select_from(Photo).where(Photo.error.is_(None))).scalar_one())
    if row is None:
        raise PhotoNotFound(photo_id)
    k = int(k)
    if k < 1:
        return []
    queries = {kind: v for kind, v in (("caption", _vector(row.caption_embedding)),
                                       ("image", _vector(row.image_embedding))) if v is not None}
    if not queries:
        return []
    allowed = _folder_ids(lib, in_folder)
    if allowed is not None:
        allowed.discard(photo_id)
        if not allowed:
            return []
        total = len(allowed) + 1
    n = max(k * FUSION.get("overfetch", 4), k + 20) + 1
    while True:
        lists = {}
        for kind, q in queries.items():
            vi = lib._vector_index(kind)
            if len(vi) == 0:
                continue
            ids, scores = vi.search(q, n, allowed_ids=None if allowed is None else np.fromiter(allowed, np.int64))
            lst = [(int(i), float(sc)) for i, sc in zip(np.ravel(ids), np.ravel(scores))
                   if int(i) >= 0 and int(i) != photo_id]
            if lst:
                lists[kind] = lst
        if not lists:
            ranked = []
        elif len(lists) == 1:
            ranked = next(iter(lists.values()))
        else:
            weights = FUSION.get("dense_weights", {})
            ranked = fuse(lists, {name: weights.get(name, 1.0) for name in lists},
                          method=FUSION.get("method", "rrf"), k_rrf=FUSION.get("k_rrf", 60))
        hits = lib._hits(ranked, k)
        if len(hits) >= k or n >= total:
            return hits
        n *= 4


def count_under(lib, folder: str) -> int:
    """Indexed photos at or below the absolute ``folder``."""
    from sqlalchemy import func, select

    from imgsearch.indexer.pipeline import under_clause
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
