"""The IVF-PQ vector index (search/dense.py) that very large libraries switch to, exercised on small ones by
lowering the size thresholds: built from a real store, re-ranked with the exact vectors read from SQLite
(so its hits and scores are those of exact search), patched after an index run, saved in vector_file's format."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.paths import captions_faiss_path, images_faiss_path
from imgsearch.search import dense as D
from imgsearch.search import index_sizing as sizing  # noqa: E402  (the size thresholds live here)
from imgsearch.search import vector_file
from imgsearch.search.caches import SearchCaches
from imgsearch.search.dense import VectorIndex, choose_index_type
from imgsearch.store import vectors as stored
from imgsearch.store.db import open_store
from libtools import make_set, rows
from test_caches import KINDS, KW, captioner_with_projection

DIM = 384
N = 600


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 30 centres (near neighbours close in score: where coarse codes err)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, DIM)).astype(np.float32)
    v = centres[rng.integers(0, 30, n)] + rng.normal(0, 0.6, (n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def pq_thresholds(monkeypatch):
    monkeypatch.setattr(sizing, "FLAT_MAX", 3)
    monkeypatch.setattr(sizing, "IVF_MIN", 4)
    monkeypatch.setattr(sizing, "PQ_KEEP", 8)
    monkeypatch.setattr(sizing, "PQ_MIN", 10)


def store_with_vectors(db, vecs: np.ndarray, step: int = 3):
    """A real library database whose photos (ids step, 2·step, ...) have only these caption vectors."""
    open_store(db).close()
    ids = np.arange(1, len(vecs) + 1, dtype=np.int64) * step
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO photos(id, path, folder, size, mtime_ns, indexed_at, caption_embedding) "
                      "VALUES (?, ?, '/p', 1, 1, '2026-01-01 00:00:00.000000', ?)",
                      [(int(i), f"/p/{i}.jpg", v.astype("<f4").tobytes()) for i, v in zip(ids, vecs)])
    return ids


def exact(ids, vecs, q, k):
    s = vecs @ q
    order = np.lexsort((ids, -s))[:k]
    return ids[order], s[order]


def test_a_large_library_gets_ivfpq_whose_reranked_hits_are_exact_search(tmp_path, pq_thresholds):
    vecs = clustered(N, seed=1)
    db = tmp_path / "library.db"
    ids = store_with_vectors(db, vecs)
    store = open_store(db)
    try:
        vi = SearchCaches(store, db).vector_index("caption")
        h = VectorIndex.read_header(captions_faiss_path(db))
        assert vi.index_type == h["index_type"] == "ivfpq" and h["count"] == N == len(vi)
        assert vi._index.code_size <= D.PQ_M < DIM       # one byte per sub-quantiser at most
        queries = clustered(40, seed=2)
        got_I, got_S = vi.search(queries, 10)             # batched, as near-duplicates searches
        for q, gi, gs in zip(queries, got_I, got_S):
            want_i, want_s = exact(ids, vecs, q, 10)
            assert gi.tolist() == want_i.tolist()
            np.testing.assert_allclose(gs, want_s, atol=1e-5)
        one_i, one_s = vi.search(queries[0], 10)          # one query, as the engine asks
        assert one_i.tolist() == got_I[0].tolist()
        # the PQ scores alone are not exact: the re-ranking is what makes these hits exact
        vi.exact_vectors = None
        pq_i, pq_s = vi.search(queries[0], 10)
        assert np.abs(pq_s - (vecs[np.searchsorted(ids, pq_i)] @ queries[0])).max() > 1e-3
        vi = SearchCaches(store, db).vector_index("caption")   # loaded from the file: re-ranked again
        # a folder filter: exact search over the allowed photos
        allowed = ids[::7]
        fi, fs = vi.search(queries[3], 10, allowed_ids=allowed)
        want_i, want_s = exact(allowed, vecs[::7], queries[3], 10)
        assert fi.tolist() == want_i.tolist()
        np.testing.assert_allclose(fs, want_s, atol=1e-5)
        # a candidate whose row is gone from SQLite is dropped, never answered with a stale score
        best = int(one_i[0])
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM photos WHERE id = ?", (best,))
        again, _ = vi.search(queries[0], 10)
        keep = ids != best
        assert again.tolist() == exact(ids[keep], vecs[keep], queries[0], 10)[0].tolist()
    finally:
        store.close()


def test_read_vectors_by_id(tmp_path):
    vecs = clustered(50, seed=3)
    db = tmp_path / "library.db"
    ids = store_with_vectors(db, vecs)
    store = open_store(db)
    try:
        got, v = stored.read_vectors(store, "caption", [int(ids[4]), 10**9, int(ids[0])])
        assert sorted(got.tolist()) == sorted([int(ids[4]), int(ids[0])])
        for i, row in zip(got.tolist(), v):
            np.testing.assert_array_equal(row, vecs[list(ids).index(i)])
        assert stored.read_vectors(store, "image", ids[:3])[0].size == 0   # no photo vectors stored
    finally:
        store.close()


def test_indexed_library_switches_to_ivfpq_is_patched_and_switches_back(tmp_path, pq_thresholds):
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS[:5], "a")
    make_set(b, KINDS + ["noise"], "b")
    db = tmp_path / "library.db"
    files = (captions_faiss_path(db), images_faiss_path(db))

    def check_exact(lib, n):
        caps = dict(rows(db, "SELECT id, caption FROM photos"))
        text = max(caps.values(), key=len)
        q = lib.embedder().embed([text])[0]
        want = {i: float(np.frombuffer(v, dtype="<f4") @ q)
                for i, v in rows(db, "SELECT id, caption_embedding FROM photos")}
        got, scores = lib.caches.vector_index("caption").search(q, 20)
        assert sorted(got.tolist()) == sorted(want)
        for i, sc in zip(got.tolist(), scores):   # exact cosines (re-ranked), not PQ estimates
            assert sc == pytest.approx(want[i], abs=1e-5)
        hits = lib.query(text, k=20, mode="dense", min_score=-1)   # near-duplicate copies fold into one hit
        assert hits and {h.id for h in hits} <= set(want)
        assert hits[0].score == pytest.approx(max(want.values()), abs=1e-5)

    with Library(db, captioner=captioner_with_projection()) as lib:
        lib.index([a], **KW)                                           # 5 photos: IVF-SQ8
        assert [VectorIndex.read_header(p)["index_type"] for p in files] == ["ivfsq8"] * 2
        lib.index([a, b], **KW)                                        # 14: past PQ_MIN, rebuilt as IVF-PQ
        for p in files:
            h = VectorIndex.read_header(p)
            assert (h["index_type"], h["count"], h["trained_on"]) == ("ivfpq", 14, 14)
            assert h["revision"] == lib.store.cache_key()
        check_exact(lib, 14)
        for f in sorted(b.iterdir())[:3]:
            f.unlink()
        lib.index([a, b], **KW)                                        # 11: patched in place (still trained on 14)
        for p in files:
            h = VectorIndex.read_header(p)
            assert (h["index_type"], h["count"], h["trained_on"]) == ("ivfpq", 11, 14)
            assert h["revision"] == lib.store.cache_key()
        got = lib.caches.vector_index("caption").ids()
        assert sorted(got.tolist()) == sorted(i for (i,) in rows(db, "SELECT id FROM photos"))
        check_exact(lib, 11)
        for f in b.iterdir():
            f.unlink()
        lib.index([a, b], prune_empty=True, **KW)                      # 5: below PQ_KEEP, IVF-SQ8 again
        assert [VectorIndex.read_header(p)["index_type"] for p in files] == ["ivfsq8"] * 2


def test_an_ivfpq_file_round_trips_through_vector_file(tmp_path):
    vecs = clustered(400, seed=4)
    ids = np.arange(10, 410, dtype=np.int64)
    by_id = dict(zip(ids.tolist(), vecs))

    def fetch(want):
        want = [int(i) for i in want if int(i) in by_id]
        return np.asarray(want, np.int64), np.stack([by_id[i] for i in want])

    idx = VectorIndex.build((ids, vecs), index_type="ivfpq", count=len(ids), exact_vectors=fetch)
    idx.remove(ids[:5])
    p = tmp_path / "library.db.captions.faiss"
    idx.save(p, revision="lib@3")
    h = VectorIndex.read_header(p)
    assert (h["index_type"], h["count"], h["ntotal"], h["revision"], h["dim"]) == ("ivfpq", 395, 395, "lib@3", DIM)
    assert isinstance(h["crc32"], int) and h["nlist"] == idx.nlist
    _, raw = vector_file.read(p)
    from imgsearch.search import faiss_lib
    faiss = faiss_lib.load()
    assert isinstance(raw, faiss.IndexIVFPQ) and raw.pq.M == D.PQ_M
    back = VectorIndex.load(p, exact_vectors=fetch)
    assert (back.index_type, back.nlist, back.pq_m, back.pq_nbits) == ("ivfpq", idx.nlist, idx.pq_m, idx.pq_nbits)
    assert sorted(back.ids().tolist()) == ids[5:].tolist()
    q = clustered(3, seed=5)
    assert (back.search(q, 10)[0] == idx.search(q, 10)[0]).all()
    data = bytearray(p.read_bytes())                                   # garble a code byte: the CRC catches it
    data[-200] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        VectorIndex.load(p)


def test_type_choice_with_pq_thresholds():
    assert choose_index_type(D.PQ_MIN) == "ivfpq" and choose_index_type(D.PQ_MIN - 1) == "ivfsq8"
    assert choose_index_type(D.PQ_KEEP, "ivfpq") == "ivfpq" and choose_index_type(D.PQ_KEEP - 1, "ivfpq") == "ivfsq8"
    assert choose_index_type(D.PQ_KEEP, "ivfsq8") == "ivfsq8"
    assert choose_index_type(D.FLAT_MAX - 1, "ivfpq") == "flat"
    assert choose_index_type(D.IVF_MIN) == "ivfsq8" and choose_index_type(10) == "flat"
    assert D.IVF_MIN < D.PQ_KEEP < D.PQ_MIN


def test_rerank_depth_grows_with_the_index_unless_set(monkeypatch):
    # the rule: PQ_RERANK at least, one candidate per PQ_RERANK_PER vectors above that (10M: 400)
    assert sizing.pq_rerank(0) == sizing.pq_rerank(D.PQ_MIN) == D.PQ_RERANK == 200
    assert sizing.pq_rerank(10_000_000) == 400 and sizing.pq_rerank(20_000_000) == 800
    monkeypatch.setattr(sizing, "PQ_RERANK", 5)
    monkeypatch.setattr(sizing, "PQ_RERANK_PER", 50)
    vecs = clustered(N, seed=5)
    ids = np.arange(1, N + 1, dtype=np.int64)
    asked: list[int] = []

    def exact_vectors(cand):
        asked.append(len(cand))
        return cand, vecs[np.asarray(cand) - 1]

    vi = VectorIndex.build((ids, vecs), index_type="ivfpq", count=N, exact_vectors=exact_vectors)
    assert vi.rerank is None
    vi.search(vecs[0], 3)
    assert asked[-1] == N // 50            # 12 candidates re-scored: the depth of 600 vectors
    vi.rerank = 30                          # a depth set by the caller wins
    vi.search(vecs[0], 3)
    assert asked[-1] == 30
