"""A library's identity (meta.library_id, migration 0006) keys every derived file with the store revision:
a cache left beside a library.db that was deleted and made again is never trusted, even when the new library
reaches the same revision; and a cache whose vectors do not match the store is rebuilt, not patched."""
from __future__ import annotations

import os

import pytest

from imgsearch import Library
from imgsearch.paths import bm25_cache_path, captions_faiss_path, images_faiss_path
from imgsearch.search import caches
from imgsearch.search.dense import VectorIndex
from imgsearch.store.db import make_engine, migrate, open_store
from libtools import captioner_with_projection, make_set, rows

KW = dict(batch_size=4, workers=0, progress=False)
KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker"]



def library_id(db) -> str:
    return rows(db, "SELECT value FROM meta WHERE key = 'library_id'")[0][0]


def test_every_library_gets_its_own_id_at_creation_and_keeps_it(tmp_path):
    ids = set()
    for name in ("a", "b"):
        db = tmp_path / name / "library.db"
        with Library(db) as lib:
            ident = lib.store.identity()
            assert len(ident) == 32 and int(ident, 16) >= 0
            assert lib.store.cache_key() == f"{ident}@{lib.store.revision()}"
        with Library(db) as lib:
            assert lib.store.identity() == ident == library_id(db)
        ids.add(ident)
    assert len(ids) == 2


def test_a_library_made_before_identities_gets_one_when_opened(tmp_path):
    db = tmp_path / "library.db"
    engine = make_engine(db)
    migrate(engine, "0005")
    engine.dispose()
    assert rows(db, "SELECT value FROM meta WHERE key = 'library_id'") == []
    store = open_store(db)
    ident = store.identity()
    store.close()
    assert ident != "none" and library_id(db) == ident


@pytest.mark.parametrize("keep_bm25", [False, True])
def test_caches_of_a_deleted_library_are_not_used_by_the_new_one(tmp_path, monkeypatch, keep_bm25):
    """The issue's repro: index A, delete library.db* but not its caches, index a different folder B of the
    same size into a new library.db at the same path: every B photo must be found by every vector mode."""
    if keep_bm25:
        monkeypatch.setattr(caches, "BM25_CACHE_MIN", 1)
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS, "a")
    make_set(b, KINDS[::-1], "b")
    db = tmp_path / "r1" / "library.db"
    with Library(db, captioner=captioner_with_projection()) as lib:
        lib.index([a], **KW)
        rev_a = lib.store.revision()
    old_headers = [VectorIndex.read_header(p) for p in (captions_faiss_path(db), images_faiss_path(db))]
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(f"{db}{suffix}")
        except FileNotFoundError:
            pass
    assert captions_faiss_path(db).exists() and images_faiss_path(db).exists()
    assert bm25_cache_path(db).exists() == keep_bm25

    with Library(db, captioner=captioner_with_projection()) as lib:
        lib.index([b], **KW)
        assert lib.store.revision() == rev_a       # the case that fooled a revision-only key
        b_ids = {i for (i,) in rows(db, "SELECT id FROM photos WHERE error IS NULL")}
        b_paths = {p for (p,) in rows(db, "SELECT path FROM photos WHERE error IS NULL")}
        assert len(b_ids) == len(KINDS) and all(os.path.dirname(p) == str(b) for p in b_paths)
        for mode in ("image", "dense"):
            hits = lib.query("a red circle", k=1000, mode=mode, min_score=0)
            assert {h.id for h in hits} == b_ids, mode
            assert {str(h.path) for h in hits} == b_paths, mode
        words = rows(db, "SELECT caption FROM photos")[0][0]
        assert {str(h.path) for h in lib.query(words, k=1000, mode="bm25", min_score=0)} <= b_paths
        if keep_bm25:
            assert lib.caches.bm25_cache() is not None
        for p, old in zip((captions_faiss_path(db), images_faiss_path(db)), old_headers):
            h = VectorIndex.read_header(p)
            assert h["revision"] == lib.store.cache_key() != old["revision"]
            assert h["count"] == len(KINDS)


def test_a_cache_that_holds_other_vectors_than_the_store_is_rebuilt_not_patched(tmp_path):
    """A file at the right key whose vectors are not the store's (damage, a copy from elsewhere) is caught
    by the vector count check after the next index run."""
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS[:5], "a")
    make_set(b, KINDS[5:], "b")
    db = tmp_path / "library.db"
    with Library(db, captioner=captioner_with_projection()) as lib:
        lib.index([a], **KW)
        path = images_faiss_path(db)
        vi = VectorIndex.load(path)
        vi.remove([min(i for (i,) in rows(db, "SELECT id FROM photos"))])   # one photo's vector lost
        vi.save(path, revision=lib.store.cache_key())
        lib.caches.clear()
        lib.index([a, b], **KW)
        want = {i for (i,) in rows(db, "SELECT id FROM photos WHERE error IS NULL")}
        assert len(want) == len(KINDS)
        assert VectorIndex.read_header(path)["count"] == len(KINDS)
        assert {h.id for h in lib.query("stripes", k=100, mode="image", min_score=0)} == want
