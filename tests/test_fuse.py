import math

import pytest

from imgsearch.search.fuse import fuse


def test_rrf_basic():
    lists = {"bm25": [(1, 9.0), (2, 5.0), (3, 1.0)], "dense": [(2, 0.9), (4, 0.8)]}
    out = fuse(lists, {"bm25": 1.0, "dense": 1.0})
    got = dict(out)
    assert got[2] == pytest.approx(1 / 62 + 1 / 61)
    assert got[1] == pytest.approx(1 / 61)
    assert got[4] == pytest.approx(1 / 62)  # only in one list: still there
    assert got[3] == pytest.approx(1 / 63)
    assert [i for i, _ in out] == [2, 1, 4, 3]
    assert all(out[j][1] >= out[j + 1][1] for j in range(len(out) - 1))


def test_rrf_weights_and_k():
    lists = {"a": [(1, 1.0)], "b": [(2, 1.0)]}
    assert fuse(lists, {"a": 1.0, "b": 2.0})[0][0] == 2
    assert fuse(lists, {"a": 3.0, "b": 2.0})[0][0] == 1
    assert fuse(lists, {"a": 1.0, "b": 1.0}, k_rrf=0)[0] == (1, 1.0)
    assert len(fuse(lists, {}, k=1)) == 1


def test_tie_break_by_id_and_input_order_ignored():
    lists = {"a": [(5, 1.0), (3, 0.5)], "b": [(3, 1.0), (5, 0.5)]}
    assert [i for i, _ in fuse(lists, None)] == [3, 5]
    # unsorted input is re-sorted by score
    assert fuse({"a": [(1, 0.1), (2, 0.9)]}, None) == fuse({"a": [(2, 0.9), (1, 0.1)]}, None)
    assert fuse({"a": [(1, 0.1), (2, 0.9)]})[0][0] == 2


def test_sum_minmax():
    lists = {"bm25": [(1, 10.0), (2, 6.0), (3, 2.0)], "dense": [(3, 0.9), (4, 0.5)]}
    got = dict(fuse(lists, {"bm25": 1.0, "dense": 0.5}, method="sum"))
    assert got[1] == pytest.approx(1.0)
    assert got[2] == pytest.approx(0.5)
    assert got[3] == pytest.approx(0.0 + 0.5 * 1.0)
    assert got[4] == pytest.approx(0.0)
    # a single-item or flat list gives 1.0
    assert fuse({"a": [(7, 3.0)]}, method="sum") == [(7, 1.0)]
    assert dict(fuse({"a": [(1, 2.0), (2, 2.0)]}, method="sum")) == {1: 1.0, 2: 1.0}


def test_missing_empty_and_bad_entries():
    assert fuse({}, {}) == []
    assert fuse({"a": [], "b": None}, {"a": 1, "b": 1}) == []
    assert fuse({"a": [(1, 1.0)], "b": []}, {"a": 1, "b": 1, "c": 1}) == [(1, pytest.approx(1 / 61))]
    assert fuse({"a": [(1, 1.0)]}, {"a": 0.0}) == []  # zero weight: ignored
    out = fuse({"a": [(1, float("nan")), (2, -math.inf), (3, 1.0), (3, 0.5)]}, method="sum")
    assert out == [(3, 1.0)]
    with pytest.raises(ValueError):
        fuse({"a": [(1, 1.0)]}, method="max")


def test_deterministic():
    import random

    rng = random.Random(0)
    lists = {n: [(rng.randrange(50), rng.random()) for _ in range(30)] for n in "abc"}
    for m in ("rrf", "sum", "zsum"):
        assert fuse(lists, {"a": 1, "b": 0.5, "c": 2}, method=m) == fuse(dict(reversed(list(lists.items()))),
                                                                          {"a": 1, "b": 0.5, "c": 2}, method=m)


def test_zsum_z_scores_and_missing_ids_get_the_list_floor():
    lists = {"a": [(1, 3.0), (2, 2.0), (3, 1.0)], "b": [(3, 10.0), (4, 0.0)]}
    got = dict(fuse(lists, {"a": 1.0, "b": 2.0}, method="zsum"))
    za = {1: 1.2247449, 2: 0.0, 3: -1.2247449}            # (s - 2) / std, std = sqrt(2/3)
    zb = {3: 1.0, 4: -1.0}
    assert got[1] == pytest.approx(za[1] + 2 * -1.0)       # missing from b: b's lowest z
    assert got[2] == pytest.approx(za[2] + 2 * -1.0)
    assert got[3] == pytest.approx(za[3] + 2 * zb[3])
    assert got[4] == pytest.approx(za[3] + 2 * zb[4])      # missing from a: a's lowest z
    assert [i for i, _ in fuse(lists, {"a": 1.0, "b": 2.0}, method="zsum")][0] == 3
    assert fuse({"a": [(1, 2.0), (2, 2.0)]}, method="zsum") == [(1, 0.0), (2, 0.0)]   # flat list: 0
    assert fuse({"a": [(1, 1.0)]}, {"a": 0.0}, method="zsum") == []
    assert fuse({"a": [(1, 1.0), (2, 0.5)]}, method="zsum", k=1)[0][0] == 1


def test_a_rare_word_counts_in_hybrid_fusion():
    """A word four photos have, all matching alike (a place name, a tag), and a photo-embedding list where they
    rank 21st to 24th: with the hybrid weights the four come first. A photo missing from the BM25 list scores 0
    there (settings.FUSION["zero_fill"]); with the list's lowest z-score as the fill the word counted for
    nothing (its four equal scores have z = 0, the same as the fill)."""
    from imgsearch.search.engine import fuse_lists
    from imgsearch.search.settings import FUSION

    words = [(i, 3.2) for i in (20, 21, 22, 23)]
    image = [(i, 0.40 - 0.002 * i) for i in range(100)]           # 20..23 past the photo list's top 20
    got = [i for i, _ in fuse_lists({"bm25": words, "image": image}, dict(FUSION["weights"]))][:4]
    assert sorted(got) == [20, 21, 22, 23]
