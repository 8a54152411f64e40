"""search/vector_builds.py: the FAISS caches that must be rebuilt, built together from one scan of the store
(store/vectors.count_kinds, sample_kinds, iter_kinds), each equal to the index its kind gets built alone; and the
search caches taking that path after an index run or when their files are gone."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from imgsearch import paths
from imgsearch.search import dense as D
from imgsearch.search import index_sizing as sizing  # noqa: E402  (the size thresholds live here)
from imgsearch.search import caches as caches_mod
from imgsearch.search.caches import FAISS_FILES, SearchCaches
from imgsearch.search.dense import VectorIndex
from imgsearch.search.vector_builds import build_kinds
from imgsearch.store import vectors as stored
from imgsearch.store.db import bump_revision, open_store

DIM = 384
N = 300
COLUMNS = {"caption": "caption_embedding", "image": "image_embedding", "labels": "label_embedding",
           "visual": "visual_embedding"}


def unit(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, DIM)).astype(np.float32)
    v = centres[rng.integers(0, 12, n)] + rng.normal(0, 0.7, (n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def library_db(tmp_path):
    """A real library database of N photos (ids 2, 4, ...) with the four vectors, except: every third photo has
    no labels nor visual vector, photo 22 failed (error set: no vector of it counts), photo 40's image vector
    has the wrong size (skipped). Returns (db, {kind: {id: vector}} of what an index must hold)."""
    db = tmp_path / "library.db"
    open_store(db).close()
    vecs = {k: unit(N, seed=s) for s, k in enumerate(COLUMNS)}
    want: dict[str, dict[int, np.ndarray]] = {k: {} for k in COLUMNS}
    rows = []
    for j in range(N):
        pid = 2 * (j + 1)
        row = {k: vecs[k][j].astype("<f4").tobytes() for k in COLUMNS}
        if j % 3 == 0:
            row["labels"] = row["visual"] = None
        if pid == 40:
            row["image"] = row["image"][:-4]
        error = "cannot decode" if pid == 22 else None
        for k in COLUMNS:
            if row[k] is not None and error is None and len(row[k]) == DIM * 4:
                want[k][pid] = vecs[k][j]
        rows.append((pid, f"/p/{pid}.jpg", error, *(row[k] for k in COLUMNS)))
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO photos(id, path, folder, size, mtime_ns, indexed_at, error, "
                      f"{', '.join(COLUMNS.values())}) VALUES (?, ?, '/p', 1, 1, '2026-01-01 00:00:00.000000', ?, "
                      "?, ?, ?, ?)", rows)
    return db, want


@pytest.fixture()
def ivf_thresholds(monkeypatch):
    monkeypatch.setattr(sizing, "FLAT_MAX", 10)
    monkeypatch.setattr(sizing, "IVF_MIN", 20)


def test_store_reads_several_kinds_in_one_scan_as_each_alone(tmp_path):
    db, want = library_db(tmp_path)
    store = open_store(db)
    try:
        kinds = list(COLUMNS)
        assert stored.count_kinds(store, kinds) == (N - 1, {k: stored.count_vectors(store, k) for k in kinds})
        assert stored.count_kinds(store, ["labels"])[1]["labels"] == len(want["labels"]) == 199   # 200, less 22
        got = {k: ([], []) for k in kinds}
        held: dict = {}
        for batch in stored.iter_kinds(store, kinds, chunk=64, held=held):
            for k, (ids, vecs) in batch.items():
                got[k][0].extend(ids.tolist())
                got[k][1].extend(vecs)
        assert held == stored.count_kinds(store, kinds)[1]    # counted as it went: photo 40's short vector too
        for k in kinds:
            alone = list(stored.iter_vectors(store, k))
            assert got[k][0] == np.concatenate([i for i, _ in alone]).tolist() == sorted(want[k])
            np.testing.assert_array_equal(np.stack(got[k][1]), np.concatenate([v for _, v in alone]))
        # the sample: each kind its need where it has that many (labels: on 2 photos of 3), spread over the ids
        sample = stored.sample_kinds(store, kinds, {"caption": 50, "image": 50, "labels": 120, "visual": 500})
        assert [len(sample[k]) for k in kinds] == [50, 50, 120, len(want["visual"])]
        label_rows = {v.tobytes(): i for i, v in want["labels"].items()}
        picked = sorted(label_rows[v.tobytes()] for v in sample["labels"])
        assert picked[0] < N * 2 // 4 < N * 2 * 3 // 4 < picked[-1]
    finally:
        store.close()


@pytest.mark.parametrize("ivf", [False, True])
def test_kinds_built_together_equal_each_built_alone(tmp_path, monkeypatch, ivf):
    if ivf:
        monkeypatch.setattr(sizing, "FLAT_MAX", 10)
        monkeypatch.setattr(sizing, "IVF_MIN", 20)
    db, want = library_db(tmp_path)
    store = open_store(db)
    try:
        built = build_kinds(store, list(COLUMNS), revision="r1")
        queries = unit(20, seed=9)
        for k, vi in built.items():
            n = stored.count_vectors(store, k)
            alone = VectorIndex.build(stored.iter_vectors(store, k), index_type=D.choose_index_type(n), count=n,
                                      sample=lambda m, k=k, n=n: stored.sample_vectors(store, k, m, n))
            assert (vi.index_type, vi.nlist, len(vi), vi.trained_on, vi.revision) == \
                   (alone.index_type, alone.nlist, len(alone), len(alone), "r1")
            assert vi.index_type == ("ivfsq8" if ivf else "flat")
            assert sorted(vi.ids().tolist()) == sorted(want[k])
            ids = np.array(sorted(want[k]))
            exact = np.stack([want[k][i] for i in ids]) @ queries.T                 # (n, 20)
            top = ids[np.argsort(-exact, axis=0)[:10]].T                             # (20, 10)
            got, _ = vi.search(queries, 10)
            hit = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got.tolist(), top.tolist())])
            assert hit == 1.0 if not ivf else hit >= 0.9, (k, hit)
    finally:
        store.close()


def test_search_caches_rebuild_the_stale_ones_together(tmp_path, monkeypatch, ivf_thresholds):
    db, want = library_db(tmp_path)
    store = open_store(db)
    try:
        caches = SearchCaches(store, db)
        caches.refresh()                                   # no files yet: all four built, from one scan
        rev = store.cache_key()
        for kind, name in FAISS_FILES.items():
            h = VectorIndex.read_header(name(db))
            assert h["revision"] == rev and h["count"] == len(want[kind]) and h["index_type"] == "ivfsq8"
        # nothing stale: no scan at all (one kind read alone would call iter_vectors; together, iter_kinds)
        for name in ("iter_vectors", "iter_kinds", "sample_vectors", "sample_kinds"):
            monkeypatch.setattr(stored, name, lambda *a, name=name, **k: pytest.fail(f"{name} called"))
        fresh = SearchCaches(store, db)
        assert not any(c.needs_rebuild() for c in fresh.vectors.values())
        fresh.refresh()
        monkeypatch.undo()
        # two files gone (one damaged): those two rebuilt together, never one kind alone
        paths.captions_faiss_path(db).unlink()
        paths.labels_faiss_path(db).write_bytes(b"not a faiss file")
        monkeypatch.setattr(stored, "iter_vectors", lambda *a, **k: pytest.fail("a kind read alone"))
        again = SearchCaches(store, db)
        assert [c.kind for c in again.vectors.values() if c.needs_rebuild()] == ["caption", "labels"]
        again.refresh()
        for kind in ("caption", "labels"):
            vi = again.vector_index(kind)
            assert sorted(vi.ids().tolist()) == sorted(want[kind]) and vi.revision == rev
            assert VectorIndex.read_header(FAISS_FILES[kind](db))["revision"] == rev
    finally:
        store.close()


def test_after_an_index_run_a_patchable_file_is_not_rebuilt(tmp_path, monkeypatch):
    db, _ = library_db(tmp_path)
    store = open_store(db)
    try:
        SearchCaches(store, db).refresh()
        rev0 = store.cache_key()
        with store.write() as s:   # a run that changed one photo: the files at rev0 can be patched
            bump_revision(s)
        caches = SearchCaches(store, db)
        assert not any(c.needs_rebuild(rev0, {2}) for c in caches.vectors.values())
        assert all(c.needs_rebuild() for c in caches.vectors.values())          # get(): not at the revision
        assert all(c.needs_rebuild("another@1", {2}) for c in caches.vectors.values())
        monkeypatch.setattr(caches_mod, "PATCH_MAX", 2)   # more changed photos than that: rebuilt, not patched
        assert all(c.needs_rebuild(rev0, {2, 4}) for c in caches.vectors.values())
        monkeypatch.undo()
        caches.update_vectors(rev0, {2})
        assert all(VectorIndex.read_header(name(db))["revision"] == store.cache_key() for name in FAISS_FILES.values())
    finally:
        store.close()


def test_adding_an_id_a_loaded_index_holds_replaces_it(tmp_path):
    vecs = unit(40, seed=3)
    vi = VectorIndex.build((np.arange(1, 41), vecs))
    newv = unit(1, seed=4)[0]
    vi.add([7], newv[None])                       # below the ids added: replaced, not added twice
    assert len(vi) == 40 and vi.search(newv, 1)[0][0] == 7
    vi.save(tmp_path / "x.faiss", revision="r")
    loaded = VectorIndex.load(tmp_path / "x.faiss")
    loaded.add([40], vecs[0][None])               # the highest id it holds, added again after a load
    loaded.add([41], vecs[1][None])
    assert len(loaded) == 41
    assert loaded.search(vecs[0], 2)[0].tolist()[:2] in ([1, 40], [40, 1])


def test_update_brings_the_faiss_files_up_beside_bm25_and_raises_what_failed(tmp_path, monkeypatch):
    db, want = library_db(tmp_path)
    store = open_store(db)
    try:
        took = SearchCaches(store, db).update("another@0", set())
        assert set(took) == {"faiss_s", "bm25_s"} and all(v >= 0 for v in took.values())
        assert all(VectorIndex.read_header(name(db))["revision"] == store.cache_key() for name in FAISS_FILES.values())
        for name in FAISS_FILES.values():
            name(db).unlink()
        seen = []

        def bm25_fails(self, rev0=None, touched=None):
            seen.append(rev0)
            raise OSError("No space left on device")

        monkeypatch.setattr(caches_mod.BM25ScoreCache, "update", bm25_fails)
        with pytest.raises(OSError, match="No space left"):
            SearchCaches(store, db).update("another@0", set())
        assert seen == ["another@0"]          # the FAISS files were still brought up to date
        assert all(VectorIndex.read_header(name(db))["revision"] == store.cache_key() for name in FAISS_FILES.values())
    finally:
        store.close()


def test_a_trained_index_is_filled_only_where_its_cells_fit_the_count(tmp_path, monkeypatch, ivf_thresholds):
    """build_kinds(trained=...): an empty trained index of the type and cell count the kind's count calls for is
    filled as it is (its kind not sampled nor trained again); one of another cell count is not used."""
    db, want = library_db(tmp_path)
    store = open_store(db)
    try:
        asked = []
        sample_kinds = stored.sample_kinds
        monkeypatch.setattr(stored, "sample_kinds", lambda s, kinds, *a, **k: asked.append(list(kinds))
                            or sample_kinds(s, kinds, *a, **k))
        nlist = D.ivf_nlist(len(want["caption"]))
        fits = VectorIndex(index_type="ivfsq8", nlist=nlist)
        fits.train(unit(nlist * D.IVF_TRAIN_PER_LIST, seed=5))
        other = VectorIndex(index_type="ivfsq8", nlist=nlist * 2)
        other.train(unit(nlist * 2 * D.IVF_TRAIN_PER_LIST, seed=6))
        built = build_kinds(store, list(COLUMNS), revision="r2", trained={"caption": fits, "image": other})
        assert built["caption"] is fits and fits.revision == "r2"
        assert sorted(fits.ids().tolist()) == sorted(want["caption"])
        assert built["image"] is not other and built["image"].nlist == D.ivf_nlist(len(want["image"]))
        assert len(other) == 0
        assert asked == [["image", "labels", "visual"]]
    finally:
        store.close()


def test_every_kind_trained_is_filled_without_a_count_first(tmp_path, monkeypatch, ivf_thresholds):
    """build_kinds with a trained index for every kind (a first ingest's early training): no count_kinds scan;
    the one scan fills them and counts; a kind whose count calls for another cell count is built again as
    build_kinds makes it alone, and equals that build."""
    db, want = library_db(tmp_path)
    store = open_store(db)
    try:
        counted = []
        count_kinds = stored.count_kinds
        monkeypatch.setattr(stored, "count_kinds", lambda s, kinds: counted.append(list(kinds)) or count_kinds(s, kinds))

        def shell(kind, factor=1):
            vi = VectorIndex(index_type="ivfsq8", nlist=D.ivf_nlist(len(want[kind])) * factor)
            vi.train(unit(vi.nlist * D.IVF_TRAIN_PER_LIST, seed=7))
            return vi

        fits = {k: shell(k) for k in COLUMNS}
        built = build_kinds(store, list(COLUMNS), revision="r3", trained=fits)
        assert counted == []
        for k in COLUMNS:
            assert built[k] is fits[k] and built[k].revision == "r3" and built[k].trained_on == len(want[k])
            assert sorted(built[k].ids().tolist()) == sorted(want[k])
        wrong = {**{k: shell(k) for k in COLUMNS}, "labels": shell("labels", factor=2)}
        built = build_kinds(store, list(COLUMNS), revision="r4", trained=wrong)
        assert counted == [["labels"]]            # the misfit alone, built again the usual way
        assert built["caption"] is wrong["caption"] and built["labels"] is not wrong["labels"]
        alone = build_kinds(store, ["labels"], revision="r4")["labels"]
        assert built["labels"].nlist == alone.nlist != wrong["labels"].nlist   # (199 vectors: fewer cells, to fit)
        assert built["labels"].revision == "r4" and sorted(built["labels"].ids().tolist()) == sorted(want["labels"])
    finally:
        store.close()
