"""BM25 over photo documents, stored as an SQLite FTS5 table inside the library database.

Why FTS5 (bench/bm25_engines.py measured it against bm25s and rank-bm25): it ranks like them and the
index lives in the library database itself, so it is persistent, updated incrementally and
transactional with the photo rows. Libraries large enough for FTS5's per-row bm25() calls to cost
too much are answered from a precomputed score cache instead (search/bm25_cache.py), derived from
this table.

Documents are (photo id, text) where text = captions + keywords + tags. The text is normalised with
imgsearch.text.normalize.search_terms (tokenize -> stopwords -> Snowball stem) and stored as the
space-joined terms, so FTS5's own tokenizer sees exactly our terms. Ranking is FTS5's built-in
bm25() (k1=1.2, b=0.75, idf = ln((N - n + 0.5) / (n + 0.5)), floored at 1e-6), negated so that
higher = better. Query terms are OR-ed (any term may match) and each is double-quoted, so user text
can never be parsed as FTS5 syntax; repeated query terms count once.

All functions take a sqlite3.Connection, a SQLAlchemy Connection, or a SQLAlchemy Session, and
run inside whatever transaction is open on it (they never commit) — call upsert/delete inside the
photo write transaction.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any, Iterable, Sequence

from imgsearch.text.normalize import search_terms

__all__ = [
    "TABLE",
    "FTS_DDL",
    "OCR_TABLE",
    "OCR_DDL",
    "K1",
    "B",
    "MAX_QUERY_TERMS",
    "ensure_fts",
    "document_terms",
    "upsert_documents",
    "delete_documents",
    "clear",
    "rebuild",
    "count",
    "optimize",
    "query_terms",
    "match_expression",
    "search",
]

TABLE = "photo_fts"
#: Exact DDL (also for the Alembic migration). rowid = photos.id; one column holding the
#: space-joined normalize.search_terms() of captions + keywords + tags.
FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS photo_fts USING fts5("
    "terms, tokenize = 'ascii', detail = full, columnsize = 1)"
)
#: The text read in photos (OCR, indexer/ocr.py) has its own BM25 field: this table, same layout, its own
#: statistics and fusion weight (the "text" signal; migration 0009). Functions below take ``table=``.
OCR_TABLE = "photo_fts_ocr"
OCR_DDL = FTS_DDL.replace("photo_fts", OCR_TABLE)
_DDL = {TABLE: FTS_DDL, OCR_TABLE: OCR_DDL}
#: FTS5's bm25() constants (compiled into SQLite, not configurable).
K1 = 1.2
B = 0.75
#: Longer queries keep their first MAX_QUERY_TERMS distinct terms (bounds the cost of pasted text).
MAX_QUERY_TERMS = 64
_CHUNK = 500


# ---------------------------------------------------------------- connection adapter

def raw_exec(conn: Any):
    """(execute(sql, params) -> rows-or-None, executemany(sql, seq)) for sqlite3 / SQLAlchemy objects."""
    if isinstance(conn, sqlite3.Connection):
        def execute(sql, params=(), fetch=False):
            cur = conn.execute(sql, params)
            return cur.fetchall() if fetch else None

        def executemany(sql, seq):
            conn.executemany(sql, seq)

        return execute, executemany
    if hasattr(conn, "exec_driver_sql"):  # SQLAlchemy Connection
        c = conn
    elif hasattr(conn, "connection") and callable(conn.connection):  # SQLAlchemy Session
        c = conn.connection()
    else:
        raise TypeError(f"expected sqlite3.Connection or SQLAlchemy Connection/Session, got {type(conn).__name__}")

    def execute(sql, params=(), fetch=False):
        res = c.exec_driver_sql(sql, tuple(params))
        return [tuple(r) for r in res.fetchall()] if fetch else None

    def executemany(sql, seq):
        seq = [tuple(p) for p in seq]
        if seq:
            c.exec_driver_sql(sql, seq)

    return execute, executemany


def _chunks(it: Iterable, n: int):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


# ---------------------------------------------------------------- writes

def ensure_fts(conn, table: str = TABLE) -> None:
    """Create the FTS5 table if missing (the Alembic migration runs the same FTS_DDL / OCR_DDL)."""
    execute, _ = raw_exec(conn)
    execute(_DDL[table])


def document_terms(text: str) -> str:
    """What is stored for one document: the space-joined search terms."""
    return " ".join(search_terms(text or ""))


@functools.lru_cache(maxsize=1 << 16)
def piece_terms(text: str) -> str:
    """document_terms of one piece of a document (a caption, a keyword, a tag, a place), remembered: a
    library's keywords, tags and places repeat from photo to photo (the bulk ingest's documents: see
    store/writes.document_terms_of)."""
    return " ".join(search_terms(text))


def upsert_documents(conn, docs: Iterable[tuple[int, str]], table: str = TABLE) -> int:
    """Insert or replace documents [(photo id, text)]; returns how many were written."""
    _, executemany = raw_exec(conn)
    n = 0
    for chunk in _chunks(docs, _CHUNK):
        rows = [(int(i), document_terms(t)) for i, t in chunk]
        ids = [(r[0],) for r in rows]
        executemany(f"DELETE FROM {table} WHERE rowid = ?", ids)
        executemany(f"INSERT INTO {table}(rowid, terms) VALUES (?, ?)", rows)
        n += len(rows)
    return n


def delete_documents(conn, ids: Iterable[int], table: str = TABLE) -> None:
    _, executemany = raw_exec(conn)
    for chunk in _chunks(ids, _CHUNK):
        executemany(f"DELETE FROM {table} WHERE rowid = ?", [(int(i),) for i in chunk])


def clear(conn, table: str = TABLE) -> None:
    """Remove every document (e.g. before a full rebuild after a NORMALIZER_VERSION change)."""
    execute, _ = raw_exec(conn)
    execute(f"DELETE FROM {table}")


def rebuild(conn, docs: Iterable[tuple[int, str]]) -> int:
    """Replace every document (after a NORMALIZER_VERSION change); returns how many were written."""
    ensure_fts(conn)
    clear(conn)
    return upsert_documents(conn, docs)


def count(conn, table: str = TABLE) -> int:
    execute, _ = raw_exec(conn)
    return int(execute(f"SELECT count(*) FROM {table}", fetch=True)[0][0])


def optimize(conn) -> None:
    """Merge FTS5 b-trees into one (optional, after a large index run; a few seconds at 1M)."""
    execute, _ = raw_exec(conn)
    execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('optimize')")


# ---------------------------------------------------------------- search

def query_terms(query: str) -> list[str]:
    """Distinct search terms of a query, in order, at most MAX_QUERY_TERMS."""
    seen: dict[str, None] = {}
    for t in search_terms(query or ""):
        if t not in seen:
            seen[t] = None
            if len(seen) >= MAX_QUERY_TERMS:
                break
    return list(seen)


def match_expression(terms: Sequence[str]) -> str:
    """FTS5 MATCH string: every term double-quoted (a string, never syntax), OR-ed."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def search(conn, query: str, k: int = 10, ids_filter: Iterable[int] | None = None,
           table: str = TABLE) -> list[tuple[int, float]]:
    """Top-k [(photo id, score)] by BM25, best first (higher score = better; ties by id).

    ids_filter: only these photo ids may be returned (None = all). Never raises on odd user text:
    a query without searchable terms returns [].
    """
    if k is None or k <= 0:
        return []
    terms = query_terms(query)
    if not terms:
        return []
    params: list[Any] = [match_expression(terms)]
    where = f"{table} MATCH ?"
    if ids_filter is not None:
        ids = sorted({int(i) for i in ids_filter})
        if not ids:
            return []
        where += " AND rowid IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(ids))
    params.append(int(k))
    execute, _ = raw_exec(conn)
    rows = execute(
        f"SELECT rowid, bm25({table}) AS s FROM {table} WHERE {where} ORDER BY s, rowid LIMIT ?",
        params, fetch=True)
    return [(int(r[0]), -float(r[1])) for r in rows]
