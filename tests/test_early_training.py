"""search/early_training.py and its use by the ingest: the IVF cells of a first big ingest trained on a sample of
the shards (cluster/shards.sample_vectors) on a thread while the rows are written, then filled there with each
committed bulk transaction's vectors, read again from the shards (cluster/early_fill.py), and completed and checked
by build_kinds instead of a scan of the store — holding exactly what a build from the store holds; filled from the
store where that fill fails or is wrong; never used where the library held photos before."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'imgsearch[ray]' to run the ingest tests")
pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (it comes with imgsearch[ray])")
import pyarrow.parquet as pq                        # noqa: E402

from imgsearch import Library                       # noqa: E402
from imgsearch.cluster import shards              # noqa: E402
from imgsearch.search import dense as D           # noqa: E402
from imgsearch.search import index_sizing as sizing  # noqa: E402  (the size thresholds live here)
from imgsearch.search import early_training as ET  # noqa: E402
from imgsearch.store import vectors as stored     # noqa: E402
from libtools import alarm, rows                  # noqa: E402
from test_ray_ingest_bulk import VERSION, make_run  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def _timeout():
    with alarm(120, "early training test"):
        yield


@pytest.fixture()
def small_ivf(monkeypatch):
    """IVF-SQ8 indexes from 20 vectors, 64 cells trained on 4 vectors each: a few hundred photos take the path."""
    monkeypatch.setattr(sizing, "FLAT_MAX", 10)
    monkeypatch.setattr(sizing, "IVF_MIN", 20)
    monkeypatch.setattr(D, "IVF_TRAIN_PER_LIST", 4)


def file_vectors(run, name: str) -> list[set[bytes]]:
    """The vectors of column ``name`` in each shard file, as bytes, file by file."""
    out = []
    for f in shards.shard_files(run):
        col = pq.read_table(f, columns=[name]).column(name).to_pylist()
        out.append({np.asarray(v, dtype=np.float32).tobytes() for v in col if v is not None})
    return out


def test_sample_vectors_spread_over_the_run_and_sized(tmp_path):
    run = make_run(tmp_path, 1200, per_file=100, unlabelled=3)
    got = shards.sample_vectors(run, {"caption": 300, "labels": 300}, VERSION)
    assert got["caption"].shape == (300, shards.DIM) and got["caption"].dtype == np.float32
    assert got["labels"].shape == (300, shards.DIM)
    per_file = file_vectors(run, "caption_embedding")
    files_hit = [i for i, vs in enumerate(per_file) if any(v.tobytes() in vs for v in got["caption"])]
    assert files_hit[0] == 0 and files_hit[-1] == len(per_file) - 1 and len(files_hit) >= 4   # spread, not the head
    everything = set().union(*per_file)
    assert all(v.tobytes() in everything for v in got["caption"])
    assert len({v.tobytes() for v in got["caption"]}) == 300                                  # no row twice
    # rows of another model version are not the library's: none taken
    other = shards.sample_vectors(run, {"caption": 50}, "another-model")
    assert {k: len(v) for k, v in other.items()} == {"caption": 0}
    # more than the run holds: all it holds (labels: two rows in three)
    got = shards.sample_vectors(run, {"caption": 5000, "labels": 5000}, VERSION)
    assert len(got["caption"]) == 1200 and len(got["labels"]) == 800


def test_training_thread_is_lowered_and_reports_a_failed_sample():
    seen = {}

    def sample(need):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen["need"] = need
        raise OSError("shards gone")

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    et = ET.EarlyTraining.start(1_000_000, sample, ["caption", "image"])
    assert et.index_type == "ivfsq8" and et.nlist == 2048
    assert et.result() == {} and isinstance(et.error, OSError)
    assert seen["need"] == {"caption": 2048 * D.IVF_TRAIN_PER_LIST, "image": 2048 * D.IVF_TRAIN_PER_LIST}
    if sys.platform.startswith("linux"):
        assert seen["nice"] == min(19, before + ET.NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before   # this thread untouched
    assert ET.EarlyTraining.start(1000, sample, ["caption"]) is None               # a flat index: nothing to train


def test_a_first_ingest_fills_the_cells_trained_during_its_writes(tmp_path, small_ivf, monkeypatch):
    run = make_run(tmp_path, 600, per_file=100, unlabelled=3)
    asked = []
    sample_kinds = stored.sample_kinds
    monkeypatch.setattr(stored, "sample_kinds", lambda store, kinds, *a, **k: asked.append(list(kinds))
                        or sample_kinds(store, kinds, *a, **k))
    db = tmp_path / "lib" / "library.db"
    with Library(db) as lib:
        rep = lib.ingest(run)
        assert rep.added == 600
        assert rep.phases["early_training_s"] > 0 and "training_wait_s" in rep.phases
        assert asked == []                        # every kind's cells came trained: the store was not sampled
        for kind, column in [("caption", "caption_embedding"), ("labels", "label_embedding")]:
            vi = lib.caches.vector_index(kind)
            want = rows(db, f"SELECT id, {column} FROM photos WHERE {column} IS NOT NULL ORDER BY id")
            assert vi.index_type == "ivfsq8" and vi.nlist == D.ivf_nlist(len(want))
            assert sorted(vi.ids().tolist()) == [pid for pid, _ in want]
            vi.nprobe = vi.nlist                  # every cell: each stored vector finds its own photo first
            for pid, blob in want[::97]:
                ids, _ = vi.search(np.frombuffer(blob, dtype="<f4"), 1)
                assert list(ids) == [pid]

    # a second ingest into the library it made: no early training (a sample of the shards is not the library's)
    run2 = make_run(tmp_path / "more", 300, per_file=100)
    with Library(db) as lib:
        rep = lib.ingest(run2)
        assert rep.added == 300 and "early_training_s" not in rep.phases


def test_the_training_starts_before_the_plan_from_the_shards_row_count(tmp_path, small_ivf, monkeypatch):
    """The plan (a scan of the roots on one thread) leaves a core idle: the k-means starts before it, its size
    guessed from the shards' footers, and its cells are used where the planned count calls for the same."""
    from imgsearch.cluster import ingest as cingest

    run = make_run(tmp_path, 600, per_file=100, unlabelled=3)
    order = []
    start, make_plan = ET.EarlyTraining.start, cingest.make_plan
    monkeypatch.setattr(ET.EarlyTraining, "start",
                        classmethod(lambda cls, n, *a: order.append(("train", n)) or start(n, *a)))
    monkeypatch.setattr(cingest, "make_plan", lambda *a, **k: order.append(("plan",)) or make_plan(*a, **k))
    assert shards.row_count(run) == 600
    with Library(tmp_path / "lib" / "library.db") as lib:
        rep = lib.ingest(run)
        assert rep.added == 600 and rep.phases["early_training_s"] > 0
        assert order == [("train", 600), ("plan",)]
        assert lib.caches.vector_index("caption").nlist == D.ivf_nlist(600)


# ---------------------------------------------------------------------------- the fill during the writes

def ivf_entries(vi) -> set[tuple[int, int, bytes]]:
    """What an IVF index holds, whatever the order it was added in: {(cell, photo id, code)}."""
    from imgsearch.search import faiss_lib

    faiss, index = faiss_lib.load(), vi._index
    out = set()
    for cell in range(index.nlist):
        n = index.invlists.list_size(cell)
        if not n:
            continue
        ids = faiss.rev_swig_ptr(index.invlists.get_ids(cell), n).copy()
        codes = faiss.rev_swig_ptr(index.invlists.get_codes(cell), n * index.code_size).tobytes()
        out.update((cell, int(i), codes[j * index.code_size:(j + 1) * index.code_size]) for j, i in enumerate(ids))
    return out


def from_the_store(store, vi):
    """The index the store-scanning build makes with ``vi``'s cells (a copy of them, emptied)."""
    from imgsearch.search import faiss_lib
    from imgsearch.search.vector_builds import build_kinds

    cells = D.VectorIndex(index_type=vi.index_type, nlist=vi.nlist)
    cells._index = faiss_lib.load().clone_index(vi._index)
    cells.clear()
    return build_kinds(store, [vi.kind], trained={vi.kind: cells})[vi.kind]


def the_same_as_a_store_build(lib) -> None:
    store = lib.store
    for kind in stored.KINDS:
        vi = lib.caches.vector_index(kind)
        vi.kind = kind
        assert vi.index_type == "ivfsq8" and len(vi) == stored.count_vectors(store, kind)
        assert ivf_entries(vi) == ivf_entries(from_the_store(store, vi)), kind


@pytest.fixture()
def scans(monkeypatch):
    """Each scan of the whole store the FAISS build makes (store/vectors.iter_kinds), by kinds."""
    seen = []
    iter_kinds = stored.iter_kinds
    monkeypatch.setattr(stored, "iter_kinds", lambda store, kinds, *a, **k: seen.append(list(kinds))
                        or iter_kinds(store, kinds, *a, **k))
    return seen


def test_a_first_ingest_fills_its_indexes_during_the_writes_as_the_store_would(tmp_path, small_ivf, scans):
    run = make_run(tmp_path, 600, per_file=100, unlabelled=3)
    adds = []
    add = D.VectorIndex.add
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(D.VectorIndex, "add", lambda self, ids, vecs: adds.append(threading.current_thread().name)
                   or add(self, ids, vecs))
        with Library(tmp_path / "lib" / "library.db") as lib:
            rep = lib.ingest(run)
            assert rep.added == 600
            assert scans == []                    # the store was not read back: the indexes came filled
            assert set(adds) == {"early-ivf-training"} and len(adds) == 4 * 6   # four kinds, six transactions
            the_same_as_a_store_build(lib)        # the cells, ids and codes a build from the store gives
            assert len(lib.query(like=5, k=3)) == 3   # and searched


def test_photos_written_through_the_rules_are_read_from_the_store(tmp_path, small_ivf, scans):
    """A failed row and a second photo of the same content go through the rules (not the bulk inserts): the
    filled indexes are completed with them from the store (their ids only, no scan)."""
    run = make_run(tmp_path, 600, per_file=100, unlabelled=3)
    f = shards.shard_files(run)[2]
    t = pq.read_table(f).to_pylist()
    t[5]["error"] = "cannot decode: truncated"                           # a failure
    info = json.loads(t[7]["info"])
    info["content_hash"] = json.loads(t[8]["info"])["content_hash"]      # the same content as the next photo
    t[7]["info"] = json.dumps(info)
    pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(f)), f)
    with Library(tmp_path / "lib" / "library.db") as lib:
        rep = lib.ingest(run)
        assert rep.added == 599 and rep.failed == 1
        assert scans == []
        the_same_as_a_store_build(lib)
        store = lib.store
        assert stored.count_vectors(store, "caption") == 599


@pytest.mark.parametrize("fault", ["shards changed", "a photo missed"])
def test_a_fill_that_fails_or_misses_a_photo_is_not_used(tmp_path, small_ivf, scans, monkeypatch, caplog, fault):
    """The fill given up (the shards no longer what was written from them) or wrong (a photo's vectors left out):
    the indexes are filled from the store instead, and hold what it holds."""
    from imgsearch.cluster import early_fill

    run = make_run(tmp_path, 600, per_file=100, unlabelled=3)
    if fault == "shards changed":
        real = early_fill.ShardVectors.__call__

        def changed(self, item):   # batch 3 read again holds other paths than the ingest wrote from it
            return real(self, dataclasses.replace(item, paths_key=item.paths_key + 1) if item.batch == 3 else item)
        monkeypatch.setattr(early_fill.ShardVectors, "__call__", changed)
    else:
        real = early_fill.bulk_vectors
        monkeypatch.setattr(early_fill, "bulk_vectors",
                            lambda batch, rows: {k: (i[1:], v[1:]) for k, (i, v) in real(batch, rows).items()})
    with Library(tmp_path / "lib" / "library.db") as lib:
        rep = lib.ingest(run)
        assert rep.added == 600
        assert scans == [list(stored.KINDS)]      # filled from one scan of the store instead
        assert "filling the IVF indexes during the ingest failed" in caplog.text
        assert ("not the one the ingest wrote from" if fault == "shards changed" else "its transaction inserted") \
            in caplog.text
        the_same_as_a_store_build(lib)


def test_items_given_during_the_training_are_added_in_order_then_on_every_core():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((D.IVF_TRAIN_PER_LIST * 64, 384)).astype(np.float32)
    loaded = []

    def load(item):
        loaded.append((item, threading.current_thread().name))
        ids = np.arange(item * 10 + 1, item * 10 + 11)
        return {"caption": (ids, x[ids])}

    et = ET.EarlyTraining(300_000, lambda need: {"caption": x[:need["caption"]]}, ["caption"], load)
    et.nlist = 64
    for item in range(3):                       # before the thread runs: queued
        et.fill_later(item)
    et._thread.start()
    et.fill_later(3)
    et.finish(patch={7, 9})
    got = et.result()
    assert et.filled and et.patch == {7, 9} and [i for i, _ in loaded] == [0, 1, 2, 3]
    assert {name for _, name in loaded} == {"early-ivf-training"}
    assert sorted(got["caption"].ids().tolist()) == list(range(1, 41))

    # cancelled: what was added is emptied (the cells kept), and it says it is not filled
    et = ET.EarlyTraining(300_000, lambda need: {"caption": x[:need["caption"]]}, ["caption"], load)
    et.nlist = 64
    et.fill_later(0)
    et._thread.start()
    et.cancel()
    got = et.result()
    assert not et.filled and all(len(vi) == 0 for vi in got.values())
