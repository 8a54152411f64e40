"""Read queries on the store: folders and paths, what a query reads, what status reads."""
from __future__ import annotations

import os

from sqlalchemy import func, literal_column, or_, select, text

from imgsearch.store.models import IndexRun, Photo, PhotoCells, Tag


def under_clause(column, root: str):
    """SQL: ``column`` is ``root`` or lies below it (a range on the index, no LIKE escaping)."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    upper = prefix[:-1] + chr(ord(os.sep) + 1)
    return or_(column == (root.rstrip(os.sep) or os.sep), (column >= prefix) & (column < upper))


# ---------------------------------------------------------------------------- what queries read

def ids_under(store, folder: str) -> set[int]:
    """Ids of the good photos at or below ``folder`` (a resolved path)."""
    with store.session() as s:
        return set(s.execute(select(Photo.id).where(under_clause(Photo.path, folder),
                                                    Photo.error.is_(None))).scalars())


def has_searchable(store) -> bool:
    """Whether any photo can be returned (cheap: no count over a million rows)."""
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM photos WHERE error IS NULL LIMIT 1")).first() is not None


def has_cells(store, version: str) -> bool:
    """Whether any good photo described by checkpoint ``version`` has re-ranking cells."""
    with store.engine.connect() as conn:
        return conn.execute(text(
            "SELECT 1 FROM photos p WHERE p.model_version = :v AND p.error IS NULL "
            "AND EXISTS (SELECT 1 FROM photo_cells c WHERE c.photo_id = p.id) LIMIT 1"), {"v": version}).first() is not None


def cells(store, ids, version: str) -> dict[int, bytes]:
    """Stored re-ranking cells of the photos ``ids`` that were described by checkpoint ``version``."""
    with store.session() as s:
        return dict(s.execute(select(PhotoCells.photo_id, PhotoCells.data)
                              .join(Photo, Photo.id == PhotoCells.photo_id)
                              .where(PhotoCells.photo_id.in_(list(ids)), Photo.model_version == version)).all())


def stored_vectors(store, photo: int | str) -> dict[str, bytes | None] | None:
    """{vector kind: blob} ("caption", "image", "labels") of a good photo by id or absolute path; None if not
    indexed."""
    with store.session() as s:
        q = select(Photo.caption_embedding, Photo.image_embedding, Photo.label_embedding).where(Photo.error.is_(None))
        q = q.where(Photo.id == photo) if isinstance(photo, int) else q.where(Photo.path == photo)
        row = s.execute(q).first()
    return None if row is None else {"caption": row.caption_embedding, "image": row.image_embedding,
                                     "labels": row.label_embedding}


def hit_rows(session, ids) -> dict[int, tuple[str, str | None]]:
    """{id: (path, best caption)} of the good photos among ``ids``."""

    return {r.id: (r.path, r.caption) for r in session.execute(
        select(Photo.id, Photo.path, Photo.caption).where(Photo.id.in_(list(ids)), Photo.error.is_(None)))}


def terms_of(session, ids) -> dict[int, dict[str, list[str]]]:
    """{id: {"tag": [...], "keyword": [...]}} for ``ids``: tags by score (photo-level, then region tags),
    keywords in stored order."""

    terms: dict[int, dict[str, list[str]]] = {i: {"tag": [], "keyword": [], "region": []} for i in ids}
    if terms:
        for pid, kind, term in session.execute(
            select(Tag.photo_id, Tag.kind, Tag.term)
            .where(Tag.photo_id.in_(list(terms)))
            .order_by(Tag.photo_id, Tag.kind, Tag.score.desc(), literal_column("tags.rowid"))
        ):
            terms[pid][kind].append(term)
    for t in terms.values():   # region tags (a class seen in one part of the photo) after the photo-level ones
        t["tag"] += t.pop("region")
    return terms


# ---------------------------------------------------------------------------- what status reads

def photo_counts(store) -> tuple[int, int, dict[str, int]]:
    """(good photos, failed files, {model version: good photos})."""
    with store.session() as s:
        photos = s.execute(select(func.count()).select_from(Photo).where(Photo.error.is_(None))).scalar_one()
        failed = s.execute(select(func.count()).select_from(Photo).where(Photo.error.is_not(None))).scalar_one()
        versions = dict(s.execute(
            select(Photo.model_version, func.count()).where(Photo.error.is_(None)).group_by(Photo.model_version)
        ).all())
    return int(photos), int(failed), {str(k): int(v) for k, v in versions.items()}


def last_runs(store) -> tuple[dict | None, dict | None]:
    """(the latest index run, the latest finished one) as dicts, or None."""
    with store.session() as s:
        last = s.execute(select(IndexRun).order_by(IndexRun.id.desc()).limit(1)).scalar_one_or_none()
        done = s.execute(select(IndexRun).where(IndexRun.finished_at.is_not(None))
                         .order_by(IndexRun.id.desc()).limit(1)).scalar_one_or_none()
        return _run_dict(last), _run_dict(done)


def _run_dict(r) -> dict | None:
    if r is None:
        return None
    return {
        "started_at": r.started_at.isoformat(timespec="seconds") + "Z",
        "finished_at": r.finished_at.isoformat(timespec="seconds") + "Z" if r.finished_at else None,
        "seconds": r.seconds, "model_version": r.model_version, "added": r.added, "updated": r.updated,
        "moved": r.moved, "removed": r.removed, "failed": r.failed,
        "skipped_unchanged": r.skipped_unchanged,
    }


def failed_files(store) -> list[tuple[str, str]]:
    """(path, reason) for every file that could not be indexed, by path."""
    with store.session() as s:
        return [(p, e) for p, e in s.execute(
            select(Photo.path, Photo.error).where(Photo.error.is_not(None)).order_by(Photo.path))]


# ---------------------------------------------------------------------------- what indexing reads

def photos_under(session, roots: list[str]) -> dict:
    """{path: row (id, path, size, mtime_ns, error, model_version, caption, labels_version)} of the photos
    under ``roots``."""
    rows = {}
    # roots in chunks: `imgsearch index *.jpg` passes thousands of them, more than one SQL expression may hold
    for i in range(0, len(roots), 200):
        q = select(Photo.id, Photo.path, Photo.size, Photo.mtime_ns, Photo.error, Photo.model_version,
                   Photo.caption, Photo.labels_version).where(or_(*[under_clause(Photo.path, r) for r in roots[i:i + 200]]))
        rows.update({r.path: r for r in session.execute(q)})
    return rows


def photos_by_hash(session, hashes) -> dict[str, list]:
    """{content hash: [rows (id, path, model_version, error, caption, content_hash)]} for ``hashes``."""
    by_hash: dict[str, list] = {}
    if hashes:
        for r in session.execute(
            select(Photo.id, Photo.path, Photo.model_version, Photo.error, Photo.caption, Photo.content_hash)
            .where(Photo.content_hash.in_(list(hashes)))
        ):
            by_hash.setdefault(r.content_hash, []).append(r)
    return by_hash
