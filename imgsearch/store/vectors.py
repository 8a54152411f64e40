"""The stored embeddings, read in bulk for the FAISS caches (straight SQL: a million rows).

``kind`` is a vector kind: "caption" (the caption vector), "image" (the photo embedding), "labels" (the
zero-shot label vector, model/labels.py) or "visual" (what the photo looks like, model/visual.py: --like only).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import bindparam, text

from imgsearch.text import EMBED_DIM

KINDS = ("caption", "image", "labels", "visual")
_COLUMN = {"caption": "caption_embedding", "image": "image_embedding", "labels": "label_embedding",
           "visual": "visual_embedding"}


def _column(kind: str) -> str:
    try:
        return _COLUMN[kind]
    except KeyError:
        raise ValueError(f"vector kind must be one of {KINDS}, not {kind!r}") from None


def count_vectors(store, kind: str) -> int:
    """How many good photos have a vector of ``kind``."""
    column = _column(kind)
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM photos WHERE {column} IS NOT NULL "
                                     "AND error IS NULL")).scalar_one())


def sample_vectors(store, kind: str, m: int, n: int) -> np.ndarray:
    """About ``m`` of the ``n`` stored vectors, spread over the whole library (every k-th id)."""
    column = _column(kind)
    step = max(1, n // max(m, 1))
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {column} FROM photos WHERE {column} IS NOT NULL AND error IS NULL "
                                 "AND id % :step = 0 LIMIT :m"), {"step": step, "m": m}).scalars().all()
    vecs = [np.frombuffer(b, dtype="<f4") for b in rows]
    vecs = [v for v in vecs if v.shape[0] == EMBED_DIM]
    return np.stack(vecs) if vecs else np.empty((0, EMBED_DIM), np.float32)


def iter_vectors(store, kind: str, only: Sequence[int] | None = None,
                 chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids (n,) int64, vectors (n, EMBED_DIM) float32) batches of good photos' vectors, by id
    (``only``: just these photo ids)."""
    column = _column(kind)
    base = f"SELECT id, {column} FROM photos WHERE {column} IS NOT NULL AND error IS NULL"
    with store.engine.connect() as conn:
        if only is None:
            results = [conn.execute(text(base + " ORDER BY id"))]
        else:
            stmt = text(base + " AND id IN :ids").bindparams(bindparam("ids", expanding=True))
            results = (conn.execute(stmt, {"ids": list(only[i:i + 900])}) for i in range(0, len(only), 900))
        ids: list[int] = []
        vecs: list[np.ndarray] = []
        for res in results:
            for pid, blob in res:
                v = np.frombuffer(blob, dtype="<f4")
                if v.shape[0] != EMBED_DIM:
                    continue
                ids.append(pid)
                vecs.append(v)
                if len(ids) >= chunk:
                    yield np.asarray(ids, dtype=np.int64), np.stack(vecs)
                    ids, vecs = [], []
        if ids:
            yield np.asarray(ids, dtype=np.int64), np.stack(vecs)


def read_vectors(store, kind: str, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(ids found (m,) int64, their vectors (m, EMBED_DIM) float32) of good photos among ``ids``, by id: the
    exact vectors an IVF-PQ search re-ranks its candidates with (a hundred or so per query)."""
    column = _column(kind)
    ids = [int(i) for i in ids]
    found: list[int] = []
    vecs: list[np.ndarray] = []
    with store.engine.connect() as conn:   # the driver's own placeholders: half the cost of an expanding bind
        for i in range(0, len(ids), 900):
            part = tuple(ids[i:i + 900])
            sql = (f"SELECT id, {column} FROM photos WHERE id IN ({','.join('?' * len(part))}) "
                   f"AND {column} IS NOT NULL AND error IS NULL")
            for pid, blob in conn.exec_driver_sql(sql, part):
                v = np.frombuffer(blob, dtype="<f4")
                if v.shape[0] == EMBED_DIM:
                    found.append(pid)
                    vecs.append(v)
    if not found:
        return np.empty(0, np.int64), np.empty((0, EMBED_DIM), np.float32)
    return np.asarray(found, dtype=np.int64), np.stack(vecs).astype(np.float32, copy=False)
