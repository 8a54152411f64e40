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
    return count_kinds(store, [kind])[1][kind]


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
    if only is None:   # the whole library: the scan of iter_kinds, for one kind
        for batch in iter_kinds(store, [kind], chunk):
            ids, vecs = batch[kind]
            if len(ids):
                yield ids, vecs
        return
    column = _column(kind)
    base = f"SELECT id, {column} FROM photos WHERE {column} IS NOT NULL AND error IS NULL"
    with store.engine.connect() as conn:
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


# ---------------------------------------------------------------------------- several kinds in one scan
# A million photos' rows hold ~6 KB of vectors each (overflow pages): reading one kind means reading the rows'
# pages, so each kind read on its own reads the whole table again. The caches rebuilt together read them once.

def count_kinds(store, kinds: Sequence[str]) -> tuple[int, dict[str, int]]:
    """(good photos, {kind: how many of them have a vector of it}), in one scan (count_vectors for each).
    typeof() reads the record header only; count(column) would read each vector (~2× slower at 1M)."""
    held = "".join(f", sum(typeof({_column(k)}) != 'null')" for k in kinds)
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql(f"SELECT count(*){held} FROM photos WHERE error IS NULL").one()
    return int(row[0]), {k: int(n or 0) for k, n in zip(kinds, row[1:])}


def _by_kind(kinds: Sequence[str], rows: list[tuple]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{kind: (ids, vectors)} of rows (id, vector of each kind or None); vectors of another size are skipped.
    Column by column: a column whose vectors are all there and of the right size (the usual case) is one join."""
    size = EMBED_DIM * 4
    cols = list(zip(*rows)) if rows else [()] * (len(kinds) + 1)
    all_ids = np.fromiter(cols[0], dtype=np.int64, count=len(rows))
    out = {}
    for j, kind in enumerate(kinds, 1):
        col = cols[j]
        if None in col or set(map(len, col)) != {size}:
            keep = [i for i, b in enumerate(col) if b is not None and len(b) == size]
            ids, col = all_ids[keep], [col[i] for i in keep]
        else:
            ids = all_ids
        vecs = np.frombuffer(b"".join(col), dtype="<f4").reshape(len(col), EMBED_DIM)
        out[kind] = (ids, vecs)
    return out


def sample_kinds(store, kinds: Sequence[str], need: dict[str, int],
                 counts: tuple[int, dict[str, int]] | None = None) -> dict[str, np.ndarray]:
    """{kind: about need[kind] of its stored vectors, spread over the whole library}, in one scan of every
    step-th id, the step chosen so that each kind gets at least its need where the library has that many
    (sample_vectors for each); ``counts``: count_kinds(store, kinds), when known."""
    cols = [_column(k) for k in kinds]
    rows_n, have = counts or count_kinds(store, kinds)
    # a kind held by a fraction f of the photos needs need / f rows of the sample
    want = max((need[k] * rows_n / have[k] for k in kinds if have.get(k)), default=0)
    step = max(1, int(rows_n // max(want, 1)))
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT id, {', '.join(cols)} FROM photos WHERE error IS NULL "
                                    f"AND id % {step} = 0").all()
    out = {}
    for kind, (_, vecs) in _by_kind(kinds, rows).items():
        if len(vecs) > need[kind]:   # evenly spread over what was read
            vecs = vecs[np.linspace(0, len(vecs) - 1, need[kind]).astype(np.int64)]
        out[kind] = vecs
    return out


def iter_kinds(store, kinds: Sequence[str], chunk: int = 32768, held: dict[str, int] | None = None
               ) -> Iterator[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{kind: (ids (n,) int64, vectors (n, EMBED_DIM) float32)} batches of the good photos' vectors of each kind,
    by id, from one scan (iter_vectors for each). Batches of 32,768 rows: FAISS adds them to an IVF index ~15%
    faster than batches of 8,192 (1M vectors: 4.4 s instead of 5.2 s), for ~200 MB of vectors held.
    ``held``: a dict given, its {kind: photos with a vector of it} grows batch by batch to what count_kinds gives
    once the scan is through (a vector of the wrong size counts there, as in count_kinds, but is not yielded)."""
    cols = [_column(k) for k in kinds]
    if held is not None:
        held.update({k: 0 for k in kinds})
    with store.engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(f"SELECT id, {', '.join(cols)} FROM photos WHERE error IS NULL ORDER BY id")
            while rows := cur.fetchmany(chunk):
                if held is not None:
                    for j, kind in enumerate(kinds, 1):
                        held[kind] += sum(1 for r in rows if r[j] is not None)
                yield _by_kind(kinds, rows)
        finally:
            cur.close()
