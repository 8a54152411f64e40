"""search/early_training.py and its use by the ingest: the IVF cells of a first big ingest trained on a sample of
the shards (cluster/shards.sample_vectors) on a thread while the rows are written, then filled from the store by
build_kinds instead of being trained there; never used where the library held photos before."""
from __future__ import annotations

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
    monkeypatch.setattr(D, "FLAT_MAX", 10)
    monkeypatch.setattr(D, "IVF_MIN", 20)
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
