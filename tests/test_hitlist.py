"""Hits from a ranking (search/hitlist.py) and the query's overlapped parts (search/engine.py workers).

The real query library (tests/query_library.py: dated, captioned photos, indexed for real); nothing mocked —
counting wrappers only observe how often the store is read.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from imgsearch import Library
import imgsearch.search.hitlist as hitlist
from imgsearch.search.hitlist import Details, make_hits

QUERIES = ["dog on the beach", "a red car", "two dogs running", "dog", "cat beach", "sofa -dog", "seashore"]


@pytest.fixture
def lib(query_library):
    db, pics, ids = query_library
    with Library(db, create=False) as lib:
        yield lib, pics, ids


class Reads:
    """What read_rows was asked for: ``ids`` per call and the ``threads`` the calls ran on."""

    def __init__(self):
        self.ids: list[list[int]] = []
        self.threads: list[str] = []


@pytest.fixture
def reads(monkeypatch) -> Reads:
    """An observing wrapper around the real read_rows."""
    seen, real = Reads(), hitlist.read_rows

    def counted(store, ids):
        seen.ids.append(list(ids))
        seen.threads.append(threading.current_thread().name)
        return real(store, ids)

    monkeypatch.setattr(hitlist, "read_rows", counted)
    return seen


def test_hits_carry_what_the_store_has(lib):
    lib, pics, ids = lib
    ranked = [(ids["car.jpg"], 2.0), (ids["dog_beach.jpg"], 1.0)]
    hits = make_hits(Details(lib.store), ranked, 10)
    assert [h.id for h in hits] == [ids["car.jpg"], ids["dog_beach.jpg"]] and [h.rank for h in hits] == [1, 2]
    car, dog = hits
    assert car.caption == "a red car on a street" and car.path == str(pics / "car.jpg")
    assert car.date_source == "file" and car.taken_at == "2022-03-10T09:00:00"
    assert dog.date_source == "exif" and dog.taken_at == "2023-12-31T23:59:59"
    assert car.score == 2.0 and dog.score == 1.0
    # tags and keywords as stored: tags by score, region tags after the photo-level ones; keywords in order
    import sqlite3

    from query_library import REGION_TAG

    sofa = make_hits(Details(lib.store), [(ids[REGION_TAG[0]], 1.0)], 1)[0]
    with sqlite3.connect(lib.store.path) as c:
        def kind(k):
            order = "score DESC, pos" if k != "keyword" else "pos"
            return [t for (t,) in c.execute(f"SELECT term FROM tags WHERE photo_id = ? AND kind = ? ORDER BY {order}",
                                             (sofa.id, k))]
        assert sofa.tags == kind("tag") + kind("region") and sofa.tags[-1] == REGION_TAG[1]
        assert sofa.keywords == kind("keyword") and sofa.keywords
    # the same as the engine's own hits for these ids
    assert [h.to_dict() for h in lib.engine.hits(ranked, 10)] == [h.to_dict() for h in hits]


def test_a_query_reads_each_photo_once(lib, reads):
    lib, pics, ids = lib
    details = Details(lib.store)
    ranked = [(i, float(-n)) for n, i in enumerate(sorted(ids.values()))]
    first = make_hits(details, ranked, 3)
    n = len(reads.ids)
    assert n >= 1 and sorted(sum(reads.ids, [])) == sorted(set(sum(reads.ids, [])))     # no id read twice
    again = make_hits(details, ranked, 3)
    assert len(reads.ids) == n and [h.id for h in again] == [h.id for h in first]   # all known: no read


def test_rows_read_ahead_are_used_and_a_failed_read_ahead_is_read_again(lib, reads):
    lib, pics, ids = lib
    ranked = [(ids[name], 1.0) for name in ("dog_sofa.jpg", "car.jpg", "cat_beach.jpg")]
    with ThreadPoolExecutor(1, thread_name_prefix="ahead") as pool:
        details = Details(lib.store)
        details.ahead(lambda fn, *a: pool.submit(fn, *a), [i for i, _ in ranked])
        hits = make_hits(details, ranked, 3)
    assert len(reads.ids) == 1 and sorted(reads.ids[0]) == sorted(i for i, _ in ranked)   # only the read ahead,
    assert reads.threads[0].startswith("ahead")                                          # on the worker
    assert [h.id for h in hits] == [i for i, _ in ranked]

    broken: Future = Future()
    broken.set_exception(OSError("disk went away"))
    details = Details(lib.store)
    details.ahead(lambda fn, *a: broken, [i for i, _ in ranked])
    assert [h.to_dict() for h in make_hits(details, ranked, 3)] == [h.to_dict() for h in hits]
    # a busy worker (no Future): the rows are read when needed
    details = Details(lib.store)
    details.ahead(lambda fn, *a: None, [i for i, _ in ranked])
    assert [h.id for h in make_hits(details, ranked, 3)] == [i for i, _ in ranked]


def test_unknown_ids_and_vanished_files_are_skipped(lib, tmp_path):
    lib, pics, ids = lib
    ranked = [(10**9, 9.0), (ids["dog_park.jpg"], 1.0)]
    assert [h.id for h in make_hits(Details(lib.store), ranked, 5)] == [ids["dog_park.jpg"]]


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense", "image", "labels"])
def test_the_overlapped_query_equals_the_serial_one(lib, mode, monkeypatch):
    """BM25, a vector search, the re-ranked photos' rows and half their cells run on the engine's workers
    when they are idle; a query that gets none (all busy: _overlap gives None) must rank exactly the same."""
    lib, pics, ids = lib
    overlapped = {q: [h.to_dict() for h in lib.query(q, k=5, mode=mode)] for q in QUERIES}
    monkeypatch.setattr(lib.engine, "_overlap", lambda fn, *a: None)
    serial = {q: [h.to_dict() for h in lib.query(q, k=5, mode=mode)] for q in QUERIES}
    assert overlapped == serial
    assert any(overlapped.values())
