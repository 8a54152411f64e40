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
    """{vector kind: blob} ("caption", "image", "labels", "visual") of a good photo by id or absolute path;
    None if not indexed."""
    with store.session() as s:
        q = select(Photo.caption_embedding, Photo.image_embedding, Photo.label_embedding,
                   Photo.visual_embedding).where(Photo.error.is_(None))
        q = q.where(Photo.id == photo) if isinstance(photo, int) else q.where(Photo.path == photo)
        row = s.execute(q).first()
    return None if row is None else {"caption": row.caption_embedding, "image": row.image_embedding,
                                     "labels": row.label_embedding, "visual": row.visual_embedding}


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
    """{path: row (id, path, size, mtime_ns, error, model_version, caption, labels_version, content_hash)} of
    the photos under ``roots``."""
    rows = {}
    # roots in chunks: `imgsearch index *.jpg` passes thousands of them, more than one SQL expression may hold
    for i in range(0, len(roots), 200):
        q = select(Photo.id, Photo.path, Photo.size, Photo.mtime_ns, Photo.error, Photo.model_version,
                   Photo.caption, Photo.labels_version, Photo.content_hash).where(or_(*[under_clause(Photo.path, r) for r in roots[i:i + 200]]))
        rows.update({r.path: r for r in session.execute(q)})
    return rows


def photo_files(session, folders: list[str] | None = None):
    """Rows (id, path, folder, error, content_hash) of every photo and failed-file record at or below one of
    ``folders`` (resolved paths), or of all of them (``None``), by path; streamed."""
    q = select(Photo.id, Photo.path, Photo.folder, Photo.error, Photo.content_hash).order_by(Photo.path)
    if folders is not None:
        if not folders:
            return
        q = q.where(or_(*[under_clause(Photo.path, f) for f in folders]))
    yield from session.execute(q.execution_options(yield_per=5000))


def hashes_in_use(session, hashes) -> set[str]:
    """The content hashes among ``hashes`` that some stored photo still has."""
    hashes = sorted(set(hashes))
    used: set[str] = set()
    for i in range(0, len(hashes), 500):
        used.update(session.execute(select(Photo.content_hash).where(
            Photo.content_hash.in_(hashes[i:i + 500]))).scalars())
    return used


def indexed_roots(store) -> list[str]:
    """Every root an index run was started on (index_runs.roots), oldest first, each once."""
    import json

    seen: dict[str, None] = {}
    with store.session() as s:
        for (raw,) in s.execute(select(IndexRun.roots).group_by(IndexRun.roots).order_by(func.min(IndexRun.id))):
            try:
                roots = json.loads(raw)
            except (TypeError, ValueError):
                continue
            for r in roots if isinstance(roots, list) else ():
                if isinstance(r, str):
                    seen.setdefault(r)
    return list(seen)


def counts_under(store, folder: str) -> tuple[int, int]:
    """(good photos, failed files) at or below ``folder``."""
    with store.session() as s:
        good, failed = s.execute(select(
            func.count().filter(Photo.error.is_(None)), func.count().filter(Photo.error.is_not(None)))
            .where(under_clause(Photo.path, folder))).one()
    return int(good or 0), int(failed or 0)


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
