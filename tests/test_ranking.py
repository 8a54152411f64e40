"""A ranking that depends only on the query (issue 12): the first n results of k=n are the first n of any
larger k in every mode, with a vanished file too; and "nothing found" — stop words, emoji and random letters
return no photo, and min_score cuts photos below the relevance bar (search/relevance.py)."""
from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.search.settings import FUSION
from libtools import tiny_captioner
from photos import make_photo

KW = dict(batch_size=8, workers=0, progress=False)
DRAWN = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker", "noise"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
THINGS = ["dog", "cat", "ball", "car", "boat", "kite"]
PLACES = ["on the grass", "in the snow", "on the beach", "in a park", "by the lake", "on a road"]
QUERIES = ["a red dog on the beach", "blue kite in the snow", "a cat", "green boat by the lake on a road"]
MODES = [("hybrid", True), ("hybrid", False), ("bm25", True), ("dense", True), ("image", True)]
NONSENSE = ["the a of and is", "xqzvkj", "qwxz fjdkv", "🐶", "!!! ???", "of the"]


def _describe(lib, captions: dict[str, tuple[str, str]]) -> None:
    """Give each photo a known caption (BM25 and caption vector) and a photo embedding of another text,
    through the store, so that the three signals disagree and the fusion has something to weigh."""
    from sqlalchemy import delete, select, update

    from imgsearch.store.db import bump_revision
    from imgsearch.store.models import Caption, Photo, pack_vector
    from imgsearch.store.writes import rebuild_search_text, set_terms
    from imgsearch.text.normalize import keywords

    emb = lib.embedder()
    cap_vecs = emb.embed([c for c, _ in captions.values()])
    img_vecs = emb.embed([v for _, v in captions.values()])
    with lib.store.write() as s:
        for (path, (cap, _)), cv, iv in zip(captions.items(), cap_vecs, img_vecs):
            pid = s.execute(select(Photo.id).where(Photo.path == path)).scalar_one()
            s.execute(delete(Caption).where(Caption.photo_id == pid))
            s.execute(update(Photo).where(Photo.id == pid).values(
                caption=cap, caption_embedding=pack_vector(cv), image_embedding=pack_vector(iv)))
            s.add(Caption(photo_id=pid, rank=0, text=cap, score=-0.5))
            set_terms(s, pid, [("keyword", w, 1.0) for w in keywords([cap])])
        s.flush()
        rebuild_search_text(s)
        bump_revision(s)


@pytest.fixture(scope="module")
def ranked_library(tmp_path_factory):
    """(db, checkpoint, paths): 36 photos described by a saved tiny checkpoint (so hybrid queries are
    re-ranked), with captions that share words in many combinations (ties and partial matches)."""
    base = tmp_path_factory.mktemp("ranking")
    ckpt = tiny_captioner(0).save(base / "tiny.pt")
    paths = []
    for i in range(36):
        kind = DRAWN[i % len(DRAWN)]
        paths.append(make_photo(base / "pics" / f"p{i:02d}_{kind}.jpg", kind=kind,
                                size=(96 + 8 * (i // len(DRAWN)), 72 + 6 * (i // len(DRAWN)))))
    captions = {str(p): (f"a {COLOURS[i % 6]} {THINGS[(i // 6) % 6]} {PLACES[(i * 5) % 6]}",
                         f"a {COLOURS[(i + 2) % 6]} {THINGS[(i * 7) % 6]} {PLACES[i % 6]}")
                for i, p in enumerate(paths)}
    db = base / "library.db"
    with Library(db, model=ckpt, device="cpu") as lib:
        lib.index([base / "pics"], **KW)
        _describe(lib, captions)
        lib.refresh_caches()
        assert lib.engine.scorer() is not None                      # hybrid queries are re-ranked
    return db, ckpt, paths


def _ids(lib, mode_rerank, k, query=None, like=None, **kw):
    if like is not None:
        return [h.id for h in lib.query(like=like, k=k)]
    mode, rerank = mode_rerank
    return [h.id for h in lib.query(query, k=k, mode=mode, rerank=rerank, **kw)]


def _assert_prefix_stable(lib, full_k=36, **kw):
    for mode in MODES:
        for query in QUERIES:
            full = _ids(lib, mode, full_k, query, **kw)
            assert len(full) == len(set(full))
            for n in (1, 2, 3, 5, 10, 24, 30):
                assert _ids(lib, mode, n, query, **kw) == full[:n], (mode, query, n)
    for like in (1, 17):
        full = _ids(lib, None, full_k, like=like)
        for n in (1, 3, 10, 24):
            assert _ids(lib, None, n, like=like) == full[:n], (like, n)


def test_first_n_results_do_not_depend_on_k(ranked_library):
    db, ckpt, _ = ranked_library
    with Library(db, model=ckpt, device="cpu") as lib:
        _assert_prefix_stable(lib, min_score=0)                       # no cut: every photo, ranked
        assert len(_ids(lib, ("dense", True), 36, QUERIES[0], min_score=0)) == 36
        _assert_prefix_stable(lib)                                    # the default cut
        _assert_prefix_stable(lib, min_score=0.3)                     # a bar that cuts photos out


def test_prefix_stable_past_the_fixed_depth(ranked_library, monkeypatch):
    """Each signal gives its top FUSION["depth"]; a larger k appends the fusion of deeper lists below it."""
    db, ckpt, _ = ranked_library
    monkeypatch.setitem(FUSION, "depth", 4)
    with Library(db, model=ckpt, device="cpu") as lib:
        _assert_prefix_stable(lib, min_score=0)
        for mode in MODES:                                            # tiers 4, 16, 64 deep: every photo once
            hits = lib.query(QUERIES[2], k=36, mode=mode[0], rerank=mode[1], min_score=0)
            assert len({h.id for h in hits}) == len(hits) == (36 if mode[0] != "bm25" else 6), mode
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:])), mode


def test_a_vanished_file_only_drops_out_of_the_order(ranked_library, monkeypatch):
    db, ckpt, paths = ranked_library
    with Library(db, model=ckpt, device="cpu") as lib:
        for depth in (FUSION["depth"], 4):
            monkeypatch.setitem(FUSION, "depth", depth)
            before = {(m, q): _ids(lib, m, 36, q, min_score=0) for m in MODES for q in QUERIES}
            gone = lib.query(QUERIES[0], k=3)[2]                      # the 3rd hybrid result
            os.rename(gone.path, gone.path + ".away")
            try:
                for (mode, query), order in before.items():
                    full = _ids(lib, mode, 36, query, min_score=0)
                    assert full == [i for i in order if i != gone.id], (depth, mode, query)
                    for n in (1, 2, 3, 5, 10):
                        assert _ids(lib, mode, n, query, min_score=0) == full[:n], (depth, mode, query, n)
            finally:
                os.rename(gone.path + ".away", gone.path)


@pytest.mark.parametrize("query", NONSENSE)
def test_nonsense_finds_nothing_in_every_mode(ranked_library, indexed_library, query):
    for db, kw in ((ranked_library[0], dict(model=ranked_library[1], device="cpu")), (indexed_library[1], {})):
        with Library(db, **kw) as lib:
            for mode, rerank in MODES:
                assert lib.query(query, k=10, mode=mode, rerank=rerank) == [], (query, mode)
            # the cut is what empties them: with none, the signals that rank every photo still do (byte-identical
            # copies are one hit: indexed_library has 9 contents in 11 files)
            with sqlite3.connect(db) as c:
                contents = c.execute("SELECT count(DISTINCT content_hash) FROM photos WHERE error IS NULL").fetchone()[0]
            assert len(lib.query(query, k=10, mode="dense", min_score=0)) == min(10, contents), query


def test_a_known_word_among_nonsense_still_searches(ranked_library):
    db, ckpt, _ = ranked_library
    with Library(db, model=ckpt, device="cpu") as lib:
        for mode, rerank in MODES:
            hits = lib.query("xqzvkj kite", k=36, mode=mode, rerank=rerank)
            assert hits, mode
        assert all("kite" in h.caption for h in lib.query("xqzvkj kite", k=36, mode="bm25"))


def _relevance(lib, db, query: str, mode: str) -> dict[int, float]:
    """The relevance of every photo (search/relevance.py), computed here from the stored vectors."""
    q = lib.embedder().embed([query])[0]
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT id, caption_embedding, image_embedding FROM photos WHERE error IS NULL").fetchall()
    cos = {"dense": lambda c_, i_: c_, "image": lambda c_, i_: i_, "hybrid": max}[mode]
    rel = {i: max(0.0, cos(float(np.frombuffer(c_, "<f4") @ q), float(np.frombuffer(i_, "<f4") @ q)))
           for i, c_, i_ in rows}
    if mode == "hybrid":
        rel.update({h.id: 1.0 for h in lib.query(query, k=100, mode="bm25", min_score=0)})
    return rel


@pytest.mark.parametrize("bar", [0.25, 0.4, 0.55])
def test_min_score_cuts_below_the_relevance_bar(ranked_library, bar):
    db, ckpt, _ = ranked_library
    with Library(db, model=ckpt, device="cpu") as lib:
        for query in QUERIES:
            for mode, rerank in MODES:
                every = lib.query(query, k=36, mode=mode, rerank=rerank, min_score=0)
                cut = lib.query(query, k=36, mode=mode, rerank=rerank, min_score=bar)
                if mode == "bm25":                                    # every BM25 result is a match
                    assert [h.id for h in cut] == [h.id for h in every]
                    continue
                rel = _relevance(lib, db, query, mode)
                want = [h.id for h in every if rel[h.id] >= bar - 1e-6]
                assert [h.id for h in cut] == want, (query, mode, bar)
                assert [h.rank for h in cut] == list(range(1, len(cut) + 1))
                if mode in ("dense", "image"):                        # the relevance is the score shown
                    assert all(h.score >= bar - 1e-6 for h in cut)
            assert lib.query(query, k=10, mode="dense", min_score=1.01) == []
        assert len(lib.query(QUERIES[0], k=36, mode="dense", min_score=-5)) == 36     # negative: no cut
        from imgsearch.errors import UserError

        with pytest.raises(UserError):
            lib.query("a dog", min_score=float("nan"))


def test_default_bar_is_for_the_checkpoint_it_was_calibrated_on(ranked_library, monkeypatch):
    """Cosines are on the describing model's scale: the calibrated default applies to a library of the shipped
    checkpoint; another checkpoint's library gets the word checks but no cosine bar unless min_score is given."""
    from imgsearch.search import relevance
    from imgsearch.search.settings import RELEVANCE

    db, ckpt, _ = ranked_library
    with Library(db, model=ckpt, device="cpu") as lib:
        assert not relevance.calibrated(lib.store) and lib.engine.default_bar() == 0.0
        assert len(lib.query(QUERIES[1], k=36, mode="dense")) == 36
        monkeypatch.setattr(relevance, "calibrated", lambda store: True)
        lib.engine._calibrated = None
        assert lib.engine.default_bar() == RELEVANCE["min_score"]
        monkeypatch.setitem(RELEVANCE, "min_score", 0.55)
        assert [h.id for h in lib.query(QUERIES[1], k=36, mode="dense")] == \
            [h.id for h in lib.query(QUERIES[1], k=36, mode="dense", min_score=0.55)]
        assert len(lib.query(QUERIES[1], k=36, mode="dense")) < 36
