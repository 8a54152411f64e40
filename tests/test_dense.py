import os

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from imgsearch.search import dense as D  # noqa: E402
from imgsearch.search import index_sizing as sizing  # noqa: E402  (the size thresholds live here)
from imgsearch.search.dense import VectorIndex  # noqa: E402

DIM = 384


@pytest.fixture(autouse=True, scope="module")
def _one_omp_thread():
    # OpenMP spin-waiting makes tiny FAISS calls crawl on a busy 2-core machine
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


def unit(n, seed=0, dim=DIM):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute(ids, vecs, q, k, allowed=None):
    s = vecs @ q
    cand = np.arange(len(ids)) if allowed is None else np.flatnonzero(np.isin(ids, list(allowed)))
    order = sorted(cand.tolist(), key=lambda j: (-s[j], ids[j]))[:k]
    return ids[order], s[order]


@pytest.fixture(params=["flat"])
def kind(request):
    return request.param


def make(kind, n=300, seed=0):
    ids = (np.arange(n, dtype=np.int64) * 7919 + 10**12)  # large, non-contiguous int64 ids
    vecs = unit(n, seed)
    idx = VectorIndex(dim=DIM, index_type=kind)
    idx.add(ids, vecs)
    return idx, ids, vecs


def test_search_matches_brute_force(kind):
    idx, ids, vecs = make(kind)
    assert len(idx) == 300
    q = unit(5, seed=1)
    for r in range(5):
        got_i, got_s = idx.search(q[r], 10)
        ref_i, ref_s = brute(ids, vecs, q[r], 10)
        assert got_i.dtype == np.int64 and got_s.dtype == np.float32
        assert list(got_i) == list(ref_i)
        assert np.allclose(got_s, ref_s, atol=1e-5)
    I, S = idx.search(q, 10)
    assert I.shape == (5, 10) and S.shape == (5, 10)


def test_k_larger_than_index_and_empty(kind):
    idx, ids, vecs = make(kind, n=4)
    i1, s1 = idx.search(unit(1, 3)[0], 10)
    assert len(i1) == 4 and set(i1) == set(ids)
    I, S = idx.search(unit(2, 3), 10)
    assert I.shape == (2, 10) and (I[:, 4:] == -1).all() and np.isneginf(S[:, 4:]).all()
    empty = VectorIndex(index_type=kind)
    i, s = empty.search(unit(1)[0], 5)
    assert len(i) == 0 and len(s) == 0
    assert empty.search(unit(1)[0], 0)[0].shape == (0,)


def test_upsert_and_remove(kind):
    idx, ids, vecs = make(kind, n=50)
    target = ids[7]
    newv = unit(1, seed=99)[0]
    idx.add([target], newv[None])  # replace
    assert len(idx) == 50
    i, s = idx.search(newv, 1)
    assert i[0] == target and s[0] == pytest.approx(1.0, abs=1e-5)
    assert idx.remove([target, 123]) == 1
    assert len(idx) == 49 and target not in idx
    i, _ = idx.search(newv, 50)
    assert target not in set(i) and len(i) == 49
    assert idx.remove([target]) == 0
    # repeated id inside one add: the last vector wins
    idx.add([5, 5], np.stack([vecs[0], newv]))
    assert len(idx) == 50
    i, s = idx.search(newv, 1)
    assert i[0] == 5


def test_allowed_ids_exact_and_selector(kind, monkeypatch):
    idx, ids, vecs = make(kind)
    q = unit(1, seed=5)[0]
    allowed = set(ids[::3].tolist()) | {42}  # 42 is not in the index
    ref_i, _ = brute(ids, vecs, q, 10, allowed)
    got_i, _ = idx.search(q, 10, allowed_ids=allowed)  # small set: exact reconstruction path
    assert list(got_i) == list(ref_i)
    monkeypatch.setattr(D, "EXACT_MAX", 0)  # force the FAISS IDSelector path
    got_i, _ = idx.search(q, 10, allowed_ids=np.array(sorted(allowed)))
    assert list(got_i) == list(ref_i)
    assert len(idx.search(q, 10, allowed_ids=[])[0]) == 0


def test_save_load_roundtrip(kind, tmp_path):
    idx, ids, vecs = make(kind)
    idx.remove(ids[:10])
    p = tmp_path / "library.db.captions.faiss"
    idx.save(p, revision=17)
    assert sorted(os.listdir(tmp_path)) == [p.name]  # no temp files left behind
    h = VectorIndex.read_header(p)
    assert h["revision"] == 17 and h["count"] == 290 and h["dim"] == DIM and h["index_type"] == kind
    back = VectorIndex.load(p)
    assert back.revision == 17 and len(back) == 290 and back.index_type == kind
    assert set(back.ids().tolist()) == set(ids[10:].tolist())
    q = unit(3, seed=8)
    assert (back.search(q, 10)[0] == idx.search(q, 10)[0]).all()


def test_open_rebuilds_when_missing_stale_or_damaged(tmp_path):
    ids = np.arange(1, 101, dtype=np.int64)
    vecs = unit(100, seed=2)
    calls = []

    def loader():
        calls.append(1)
        for s in range(0, 100, 32):  # batches, like rows streamed from SQLite
            yield ids[s:s + 32], vecs[s:s + 32]

    p = tmp_path / "x.faiss"
    idx = VectorIndex.open(p, 3, loader)
    assert len(calls) == 1 and len(idx) == 100 and p.exists()
    idx = VectorIndex.open(p, 3, loader)  # fresh: no rebuild
    assert len(calls) == 1 and len(idx) == 100
    idx = VectorIndex.open(p, 4, loader)  # store moved on: rebuild
    assert len(calls) == 2 and VectorIndex.read_header(p)["revision"] == 4
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated
    assert len(VectorIndex.open(p, 4, loader)) == 100 and len(calls) == 3
    p.write_bytes(b"garbage" * 100)
    assert len(VectorIndex.open(p, 4, loader)) == 100 and len(calls) == 4
    assert len(VectorIndex.open(p, 4, loader, index_type="ivfsq8")) == 100 and len(calls) == 5  # other type
    assert VectorIndex.read_header(p)["index_type"] == "ivfsq8"
    # a loader returning one (ids, vectors) pair also works, as does an empty store
    assert len(VectorIndex.open(tmp_path / "y.faiss", 1, lambda: (ids, vecs))) == 100
    assert len(VectorIndex.open(tmp_path / "z.faiss", 1, lambda: iter(()))) == 0


def test_bad_input():
    idx = VectorIndex()
    with pytest.raises(ValueError):
        idx.add([1], np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError):
        idx.add([1, 2], unit(1))
    with pytest.raises(ValueError):
        VectorIndex(index_type="ivf")


# ----------------------------------------------------------------------------- IVF-SQ8 (large libraries)

def clustered(n, seed=0, centers=40):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, DIM)).astype(np.float32)
    v = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def ivf():
    n = 4000
    ids = np.arange(n, dtype=np.int64) * 13 + 5
    vecs = clustered(n)
    idx = VectorIndex.build([(ids[:2500], vecs[:2500]), (ids[2500:], vecs[2500:])], index_type="ivfsq8", count=n)
    return idx, ids, vecs


def test_ivf_sizes_and_type_choice():
    assert D.ivf_nlist(1_000_000) == 2048 and D.ivf_nlist(200_000) == 1024 and D.ivf_nlist(10) == 64
    assert D.choose_index_type(10) == "flat" and D.choose_index_type(D.IVF_MIN) == "ivfsq8"
    mid = (D.FLAT_MAX + D.IVF_MIN) // 2
    assert D.choose_index_type(mid) == "flat" and D.choose_index_type(mid, "ivfsq8") == "ivfsq8"
    assert D.choose_index_type(D.FLAT_MAX - 1, "ivfsq8") == "flat"


def test_ivf_recall_against_exact_search(ivf):
    idx, ids, vecs = ivf
    assert idx.index_type == "ivfsq8" and len(idx) == 4000 and idx.nlist == 128 and idx.trained_on == 4000
    q = clustered(50, seed=3)
    I, S = idx.search(q, 10)
    hits = 0
    for r in range(len(q)):
        ref_i, ref_s = brute(ids, vecs, q[r], 10)
        hits += len(set(I[r]) & set(ref_i))
        got = dict(zip(I[r].tolist(), S[r].tolist()))
        for i, s in zip(ref_i, ref_s):   # 8-bit codes: scores within ~0.02 of the exact cosine
            if i in got:
                assert abs(got[i] - s) < 0.02
    assert hits / (10 * len(q)) >= 0.9


def test_ivf_upsert_remove_filter_and_roundtrip(ivf, tmp_path, monkeypatch):
    base, ids, vecs = ivf
    p = tmp_path / "x.faiss"
    base.save(p, revision=3)
    idx = VectorIndex.load(p)
    assert idx.index_type == "ivfsq8" and idx.nlist == base.nlist and len(idx) == len(base)
    q = clustered(5, seed=9)
    assert (idx.search(q, 10)[0] == base.search(q, 10)[0]).all()
    assert set(idx.ids().tolist()) == set(ids.tolist())
    newv = vecs[0]
    idx.add([ids[1]], newv[None])                      # replace: ids[1] now sits on ids[0]'s vector
    assert len(idx) == 4000
    got, _ = idx.search(newv, 2)
    assert set(got.tolist()) == {ids[0], ids[1]}
    assert idx.remove([ids[0], 999_999]) == 1 and len(idx) == 3999 and ids[0] not in set(idx.ids().tolist())
    allowed = set(ids[2::50].tolist())                 # small set: every cell probed
    got, _ = idx.search(q[0], 10, allowed_ids=allowed)
    assert len(got) == 10 and set(got.tolist()) <= allowed
    ref_i, _ = brute(ids, vecs, q[0], 10, allowed)
    assert len(set(got.tolist()) & set(ref_i.tolist())) >= 8
    monkeypatch.setattr(D, "EXACT_MAX", 0)       # large set: proportionally more cells
    big = set(ids[2::3].tolist())
    got, _ = idx.search(q[0], 10, allowed_ids=np.array(sorted(big)))
    assert len(got) == 10 and set(got.tolist()) <= big


def test_open_builds_the_type_the_count_calls_for(tmp_path, monkeypatch):
    monkeypatch.setattr(sizing, "IVF_MIN", 1000)
    monkeypatch.setattr(sizing, "FLAT_MAX", 500)
    vecs = clustered(1200, seed=4)
    ids = np.arange(1200, dtype=np.int64)
    calls = []

    def sample(n):
        calls.append(n)
        return vecs[::2]

    p = tmp_path / "v.faiss"
    idx = VectorIndex.open(p, 1, lambda: [(ids, vecs)], index_type=None, count=1200, sample=sample)
    assert idx.index_type == "ivfsq8" and calls == [idx.nlist * D.IVF_TRAIN_PER_LIST] and len(idx) == 1200
    again = VectorIndex.open(p, 1, lambda: pytest.fail("fresh file must not be rebuilt"), index_type=None)
    assert again.index_type == "ivfsq8"
    small = VectorIndex.open(tmp_path / "w.faiss", 1, lambda: [(ids[:100], vecs[:100])], index_type=None, count=100)
    assert small.index_type == "flat"
