"""The reads on a query's hot path, in plain SQL on a DB-API cursor: what every hit shows and the re-ranked
photos' cells.

    with hot_reads.cursor(store) as cur:          # one read transaction: a consistent snapshot
        hot_reads.photo_rows(cur, ids)            # {id: (path, caption, taken_at, mtime_ns, ocr_text)}

SQLAlchemy builds, caches and renders an ``IN (...)`` statement in ~0.3–0.5 ms of Python a query, holding the
interpreter lock, where SQLite answers these in less; a query makes four or five of them, some on the engine's
workers beside the re-ranker's threads. The other reads stay in store/queries.py.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
from typing import Iterator, Sequence


@contextlib.contextmanager
def cursor(store) -> Iterator:
    """A DB-API cursor of a pooled connection inside one read transaction (``BEGIN`` … ``COMMIT``)."""
    conn = store.engine.raw_connection()
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        finally:
            cur.execute("COMMIT")     # a read transaction: ends the snapshot
            cur.close()
    finally:
        conn.close()                  # back to the pool


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _datetime(value) -> _dt.datetime | None:
    """A DATETIME column as SQLAlchemy stores it on SQLite ("2024-06-15 10:00:00.000000") → datetime."""
    if value is None or isinstance(value, _dt.datetime):
        return value
    return _dt.datetime.fromisoformat(str(value))


def photo_rows(cur, ids: Sequence[int]) -> dict[int, tuple]:
    """{id: (path, best caption, taken_at, mtime_ns, OCR text or None)} of the good photos among ``ids``."""
    ids = list(ids)
    if not ids:
        return {}
    rows = cur.execute("SELECT id, path, caption, taken_at, mtime_ns, ocr_text FROM photos "
                       f"WHERE error IS NULL AND id IN ({_marks(len(ids))})", ids).fetchall()
    return {i: (path, caption, _datetime(taken), mtime, ocr or None) for i, path, caption, taken, mtime, ocr in rows}


def copy_groups(cur, ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
    """{id: [(id, path)] of the good photos with its content hash, itself included, by id} for the ids among
    ``ids`` that have at least one such copy (search/duplicates.Collapse)."""
    ids = list(ids)
    if not ids:
        return {}
    groups: dict[int, list[tuple[int, str]]] = {}
    for pid, oid, path in cur.execute(
            "SELECT p.id, o.id, o.path FROM photos p JOIN photos o ON o.content_hash = p.content_hash "
            f"WHERE p.id IN ({_marks(len(ids))}) AND p.content_hash IS NOT NULL AND o.error IS NULL "
            "ORDER BY p.id, o.id", ids):
        groups.setdefault(pid, []).append((oid, path))
    return {pid: g for pid, g in groups.items() if len(g) > 1}


def terms(cur, ids: Sequence[int]) -> dict[int, dict[str, list[str]]]:
    """{id: {"tag": [...], "keyword": [...]}} for ``ids``: tags by score (photo-level, then region tags),
    keywords in stored order."""
    out: dict[int, dict[str, list[str]]] = {i: {"tag": [], "keyword": [], "region": []} for i in ids}
    if out:
        for pid, kind, term in cur.execute(
                f"SELECT photo_id, kind, term FROM tags WHERE photo_id IN ({_marks(len(out))}) "
                "ORDER BY photo_id, kind, score DESC, pos", list(out)):
            out[pid][kind].append(term)
    for t in out.values():
        t["tag"] += t.pop("region")
    return out


def cells(store, ids: Sequence[int], version: str) -> dict[int, bytes]:
    """Stored re-ranking cells of the photos ``ids`` that were described by checkpoint ``version``."""
    ids = list(ids)
    if not ids:
        return {}
    with cursor(store) as cur:
        return dict(cur.execute(
            "SELECT c.photo_id, c.data FROM photo_cells c JOIN photos p ON p.id = c.photo_id "
            f"WHERE c.photo_id IN ({_marks(len(ids))}) AND p.model_version = ?", [*ids, version]).fetchall())
