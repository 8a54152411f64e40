"""search/caches.py: the code paths a large library takes — precomputed BM25 scores, IVF-SQ8 vector
indexes — exercised on small libraries by lowering the size thresholds. Results must match the small-library paths."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.paths import bm25_cache_path, captions_faiss_path, images_faiss_path
from imgsearch.search import bm25, caches
from imgsearch.search.bm25_cache import BM25Cache
from imgsearch.search import dense as D
from imgsearch.search import index_sizing as sizing  # noqa: E402  (the size thresholds live here)
from imgsearch.search.dense import VectorIndex
from libtools import captioner_with_projection, make_set, rows, tiny_captioner

KW = dict(batch_size=8, workers=0, progress=False)
KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker"]



def fts(db, text, k):
    with Library(db) as lib, lib.store.engine.connect() as conn:
        return bm25.search(conn, text, k)


def test_bm25_cache_built_used_refreshed_and_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "BM25_CACHE_MIN", 1)
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS[:5], "a")
    make_set(b, KINDS[5:], "b")
    db = tmp_path / "library.db"
    path = bm25_cache_path(db)
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([a], **KW)
        assert path.is_file()
        assert BM25Cache.open(path, lib.store.cache_key()) is not None
        old = tmp_path / "old.npz"
        shutil.copy(path, old)
        lib.index([a, b], **KW)
        rev = lib.store.cache_key()
        assert BM25Cache.open(path, rev) is not None          # rebuilt at the new revision
        text = " ".join(c for (c,) in rows(db, "SELECT caption FROM photos"))
        want = fts(db, text, 8)
        assert len(want) == 8
        assert lib.caches.bm25_cache() is not None
        got = lib.engine.bm25_search(text, 8)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [round(s, 3) for _, s in got] == [round(s, 3) for _, s in want]
        hits = lib.query(text, k=8, mode="bm25")
        assert [h.id for h in hits] == [i for i, _ in want]

    shutil.copy(old, path)                                            # stale file: FTS5 answers
    with Library(db) as lib:
        assert lib.caches.bm25_cache() is None
        assert [h.id for h in lib.query(text, k=8, mode="bm25")] == [i for i, _ in want]
        lib.refresh_caches()
        assert lib.caches.bm25_cache() is not None

    monkeypatch.setattr(caches, "BM25_CACHE_MIN", 10**9)                  # small library again: no cache file
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([a, b], **KW)
        assert not path.exists()


def test_vector_indexes_switch_to_ivf_and_back(tmp_path, monkeypatch):
    monkeypatch.setattr(sizing, "IVF_MIN", 10)
    monkeypatch.setattr(sizing, "FLAT_MAX", 6)
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS[:5], "a")
    make_set(b, KINDS + ["noise"], "b")
    db = tmp_path / "library.db"
    with Library(db, captioner=captioner_with_projection()) as lib:
        lib.index([a], **KW)
        for p in (captions_faiss_path(db), images_faiss_path(db)):
            assert VectorIndex.read_header(p)["index_type"] == "flat"
        lib.index([a, b], **KW)                                       # 14 photos: past IVF_MIN
        for p in (captions_faiss_path(db), images_faiss_path(db)):
            h = VectorIndex.read_header(p)
            assert h["index_type"] == "ivfsq8" and h["count"] == 14 and h["revision"] == lib.store.cache_key()
        caps = dict(rows(db, "SELECT id, caption FROM photos"))
        pid, text = max(caps.items(), key=lambda kv: len(kv[1]))
        hits = lib.query(text, k=14, mode="dense")
        distinct = rows(db, "SELECT count(DISTINCT content_hash) FROM photos")[0][0]   # A's scenes are in B too:
        assert distinct == 9                                           # copies are one hit (+ its copies)
        assert len(hits) == distinct and len({h.id for h in hits}) == distinct
        assert sum(1 + len(h.copies) for h in hits) == 14
        q = lib.embedder().embed([text])[0]
        exact = {i: float(np.frombuffer(v, dtype="<f4") @ q)
                 for i, v in rows(db, "SELECT id, caption_embedding FROM photos")}
        for h in hits:                    # 8-bit codes: every score within 0.03 of the exact cosine
            assert h.score == pytest.approx(exact[h.id], abs=0.03)
        assert hits[0].score == pytest.approx(max(exact.values()), abs=0.03)
        assert len(lib.query(text, k=20, mode="image")) == distinct
        assert {h.path for h in lib.query(text, k=20, mode="hybrid", in_folder=a)} == \
            {p for (p,) in rows(db, "SELECT path FROM photos WHERE folder = ?", (str(a),))}
        for f in b.iterdir():
            f.unlink()
        lib.index([a, b], prune_empty=True, **KW)                     # 5 photos: below FLAT_MAX
        for p in (captions_faiss_path(db), images_faiss_path(db)):
            assert VectorIndex.read_header(p)["index_type"] == "flat"
        assert len(lib.query("a red circle", k=10, mode="dense")) == 5


def test_a_faiss_file_with_garbled_bytes_inside_is_rebuilt_not_used(tmp_path):
    """FAISS reads a file whose vector bytes were overwritten without complaint; the checksum in the header
    catches it, so the query answers from vectors rebuilt from SQLite."""
    a = tmp_path / "A"
    make_set(a, KINDS, "a")
    db = tmp_path / "library.db"
    with Library(db, captioner=captioner_with_projection()) as lib:
        lib.index([a], **KW)
        want = [(h.id, round(h.score, 5)) for h in lib.query("a red circle", k=8, mode="image", min_score=0)]
    path = images_faiss_path(db)
    size = path.stat().st_size
    with open(path, "r+b") as f:                   # well inside the vectors, header and FAISS framing intact
        f.seek(size // 2)
        f.write(bytes(64))
    with Library(db) as lib:
        got = [(h.id, round(h.score, 5)) for h in lib.query("a red circle", k=8, mode="image", min_score=0)]
    assert got == want
    VectorIndex.load(path)                          # rewritten whole
    assert VectorIndex.read_header(path)["count"] == len(KINDS)
