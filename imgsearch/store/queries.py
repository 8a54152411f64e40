"""Read queries on the store: folders and paths, what a query reads, what status reads."""
from __future__ import annotations

import os

from sqlalchemy import func, or_, select, text

from imgsearch.store.models import IndexRun, Photo, Tag


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


def _id_set(store, sql: str, params=()) -> set[int]:
    """The first column of ``sql`` as a set, read on the raw sqlite3 cursor (a set of a million ids in a
    third of the time SQLAlchemy's rows take)."""
    with store.engine.connect() as conn:
        return {r[0] for r in conn.connection.driver_connection.execute(sql, tuple(params))}


def good_ids(store) -> set[int]:
    """Ids of every good photo (what an exclusion-only filter starts from)."""
    return _id_set(store, "SELECT id FROM photos WHERE error IS NULL")


def _stored_datetime(t) -> str:
    """A naive datetime as SQLAlchemy's SQLite DateTime stores it ("2024-06-15 10:00:00.000000")."""
    return t.isoformat(sep=" ", timespec="microseconds")


def ids_dated(store, start, end, start_ns: int | None, end_ns: int | None) -> set[int]:
    """Ids of the good photos dated ``start <= date < end`` (None: open): the EXIF date taken (naive
    datetimes) when there is one, else the file's mtime (``start_ns`` / ``end_ns``: the same bounds as
    nanoseconds since the epoch). Read from the index ix_photos_dates (rev 0012), not the table."""
    exif, file, exif_params, file_params = ["taken_at IS NOT NULL"], ["taken_at IS NULL"], [], []
    if start is not None:
        exif.append("taken_at >= ?")
        file.append("mtime_ns >= ?")
        exif_params.append(_stored_datetime(start))
        file_params.append(int(start_ns))
    if end is not None:
        exif.append("taken_at < ?")
        file.append("mtime_ns < ?")
        exif_params.append(_stored_datetime(end))
        file_params.append(int(end_ns))
    params = exif_params + file_params
    return _id_set(store, f"SELECT id FROM photos WHERE error IS NULL AND (({' AND '.join(exif)}) OR "
                          f"({' AND '.join(file)}))", params)


def ids_with_terms(store, groups) -> set[int]:
    """Ids of the photos whose BM25 document (captions, keywords, tags) holds every term of one of
    ``groups`` (tuples of normalised search terms): one FTS5 query, no limit."""
    from imgsearch.search.bm25 import TABLE

    def quoted(t: str) -> str:
        return '"' + t.replace('"', '""') + '"'

    expr = " OR ".join("(" + " AND ".join(quoted(t) for t in g) + ")" for g in groups if g)
    if not expr:
        return set()
    return _id_set(store, f"SELECT rowid FROM {TABLE} WHERE {TABLE} MATCH ?", (expr,))




def by_date(store, allowed: set[int] | None, newest: bool, limit: int) -> list[tuple[int, float]]:
    """The first ``limit`` good photos (among ``allowed``; None: all) by date — the EXIF date taken, else
    the file's mtime in local time — newest or oldest first, ties by id (the same way round), as
    [(id, 0.0)]. One scan of the index ix_photos_dates (rev 0012), then a sort (the key's 'localtime'
    cannot be indexed)."""
    import json

    # text that sorts as the dates do ("2024-06-15 10:00:00.000000" / "2024-06-15 10:00:00"): a third of the
    # time strftime() on both takes
    key = "COALESCE(taken_at, datetime(mtime_ns / 1000000000, 'unixepoch', 'localtime'))"
    way = "DESC" if newest else "ASC"
    where = "error IS NULL"
    params: dict = {"n": int(limit)}
    if allowed is not None:
        if not allowed:
            return []
        where += " AND id IN (SELECT value FROM json_each(:ids))"
        params["ids"] = json.dumps(sorted(allowed))
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id FROM photos WHERE {where} ORDER BY {key} {way}, id {way} LIMIT :n"),
                            params)
        return [(int(r[0]), 0.0) for r in rows]


def ids_near(store, lat: float, lon: float, km: float) -> set[int]:
    """Ids of the good photos whose GPS position is within ``km`` of (lat, lon): a bounding box on the
    (gps_lat, gps_lon) index, then the exact great-circle distance (imgsearch/places.py)."""
    from imgsearch import places

    lat_min, lat_max, lon_min, lon_max = places.bounding_box(lat, lon, km)
    q = select(Photo.id, Photo.gps_lat, Photo.gps_lon).where(
        Photo.error.is_(None), Photo.gps_lat.between(lat_min, lat_max), Photo.gps_lon.is_not(None))
    if lon_min is not None:
        q = q.where(Photo.gps_lon.between(lon_min, lon_max))
    with store.session() as s:
        rows = s.execute(q).all()
    if not rows:
        return set()
    d = places.distance_km(lat, lon, [r.gps_lat for r in rows], [r.gps_lon for r in rows])
    return {int(r.id) for r, km_ in zip(rows, d.tolist()) if km_ <= km}


def place_counts(store) -> list[tuple[str, int]]:
    """[(place, good photos there)], most photos first, then by place: from the partial index ix_photos_place (its
    WHERE is this query's), not the table."""
    n = func.count()
    with store.session() as s:
        return [(p, int(c)) for p, c in s.execute(
            select(Photo.place, n).where(Photo.error.is_(None), Photo.place.is_not(None))
            .group_by(Photo.place).order_by(n.desc(), Photo.place))]


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










# ---------------------------------------------------------------------------- what the start page reads

def recent_ids(store, n: int) -> list[int]:
    """Ids of the ``n`` good photos added last, newest first (by id: the primary key, so O(n) at any size;
    ``indexed_at`` has no index)."""
    with store.session() as s:
        return list(s.execute(select(Photo.id).where(Photo.error.is_(None))
                              .order_by(Photo.id.desc()).limit(max(0, int(n)))).scalars())


def term_frequencies(store, sample: int) -> tuple[int, list[tuple[str, int]]]:
    """(photos read, [(term, photos having it)]) over the caption keywords and photo-level tags of the
    ``sample`` good photos added last, most frequent first (ties by term)."""
    with store.session() as s:
        ids = select(Photo.id).where(Photo.error.is_(None)).order_by(Photo.id.desc()).limit(max(0, int(sample)))
        ids = ids.subquery()
        n = s.execute(select(func.count()).select_from(ids)).scalar_one()
        df = func.count(Tag.photo_id.distinct())
        rows = s.execute(select(Tag.term, df).where(Tag.photo_id.in_(select(ids.c.id)),
                                                     Tag.kind.in_(("keyword", "tag")))
                         .group_by(Tag.term).order_by(df.desc(), Tag.term)).all()
    return int(n), [(t, int(c)) for t, c in rows]


def library_counts(store) -> tuple[int, int]:
    """(good photos, folders holding them)."""
    with store.session() as s:
        photos, folders = s.execute(select(func.count(), func.count(Photo.folder.distinct()))
                                    .where(Photo.error.is_(None))).one()
    return int(photos or 0), int(folders or 0)


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
    """{path: row (id, path, size, mtime_ns, error, model_version, caption, content_hash)} of the photos under
    ``roots``: the columns before the vectors in a record (its first page); for the versions, not_at_version."""
    rows = {}
    # roots in chunks: `imgsearch index *.jpg` passes thousands of them, more than one SQL expression may hold
    for i in range(0, len(roots), 200):
        q = select(Photo.id, Photo.path, Photo.size, Photo.mtime_ns, Photo.error, Photo.model_version,
                   Photo.caption, Photo.content_hash).where(or_(*[under_clause(Photo.path, r) for r in roots[i:i + 200]]))
        rows.update({r.path: r for r in session.execute(q)})
    return rows


def not_at(column, version: str):
    """``column`` is not ``version`` (NULL included), written so that SQLite answers it from the column's index
    (the OR of three ranges; ``IS NOT ?`` or ``!=`` would read every row)."""
    return or_(column.is_(None), column < version, column > version)


def not_at_version(session, column, version: str) -> set[int]:
    """Ids of the photos whose ``column`` (Photo.labels_version, ocr_version, places_version: each indexed, rev
    0012) is not ``version``; an up-to-date library answers from the index alone, without reading a record (those
    columns come after the vectors: reading them for every photo reads the whole table)."""
    return set(session.execute(select(Photo.id).where(not_at(column, version))).scalars())


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
    conn = session.connection()
    for i in range(0, len(hashes), 900):   # the driver's own placeholders: an ingest asks 2,000 a chunk
        part = tuple(hashes[i:i + 900])
        used.update(h for (h,) in conn.exec_driver_sql(
            f"SELECT DISTINCT content_hash FROM photos WHERE content_hash IN ({','.join('?' * len(part))})", part))
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


# ---------------------------------------------------------------------------- what duplicates read



def same_hash_groups(store, folder: str | None = None) -> list[list]:
    """Rows (id, path, content_hash, width, height, size) of the good photos (at or below ``folder``) that
    share their content hash with another one, grouped by hash, each group by id."""
    q = select(Photo.id, Photo.path, Photo.content_hash, Photo.width, Photo.height, Photo.size).where(
        Photo.error.is_(None), Photo.content_hash.is_not(None))
    if folder is not None:
        q = q.where(under_clause(Photo.path, folder))
    dup = (select(Photo.content_hash).where(Photo.error.is_(None), Photo.content_hash.is_not(None))
           .group_by(Photo.content_hash).having(func.count() > 1))
    if folder is not None:
        dup = dup.where(under_clause(Photo.path, folder))
    groups: dict[str, list] = {}
    with store.session() as s:
        for r in s.execute(q.where(Photo.content_hash.in_(dup)).order_by(Photo.content_hash, Photo.id)):
            groups.setdefault(r.content_hash, []).append(r)
    return list(groups.values())


def duplicate_rows(store, ids) -> list:
    """Rows (id, path, content_hash, width, height, size, visual_embedding) of the good photos among ``ids``."""
    ids = list(ids)
    out = []
    with store.session() as s:
        for i in range(0, len(ids), 900):
            out += s.execute(select(Photo.id, Photo.path, Photo.content_hash, Photo.width, Photo.height, Photo.size,
                                    Photo.visual_embedding)
                             .where(Photo.id.in_(ids[i:i + 900]), Photo.error.is_(None))).all()
    return out
