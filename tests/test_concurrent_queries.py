"""Concurrent queries (issue 13, defect 6): searches run side by side in `imgsearch serve` and in one Library,
give the same results as one at a time, and never wait for a thumbnail.

The "side by side" tests are deterministic: a barrier inside the query path lets a query go on only once a
second query has reached the same point, so they pass only if two queries are inside it at the same time
(with one query at a time, the barrier times out and the request fails).
"""
from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse

import numpy as np
import pytest

pytest.importorskip("fastapi")

from imgsearch import Library  # noqa: E402
from imgsearch.search.dense import VectorIndex  # noqa: E402
from imgsearch.serve import app as serve_app  # noqa: E402
from imgsearch.serve import thumbs  # noqa: E402
from imgsearch.serve.app import create_app  # noqa: E402
from serve_library import PHOTOS, LiveServer  # noqa: E402

WAIT_S = 20   # a barrier's timeout: only reached when the queries are serialised (the test then fails)
QUERIES = ["red circle", "blue square on a table", "green triangle tent", "sky above a field", "kite",
           "checkerboard floor", "purple kite", "a white wall", "snow", "yellow table"]


def _barrier_on(obj, name: str, parties: int = 2, when=lambda *a, **kw: True):
    """Wrap ``obj.name`` so that its first ``parties`` calls (for which ``when`` holds) wait for each other."""
    orig = getattr(obj, name)
    barrier = threading.Barrier(parties, timeout=WAIT_S)
    lock = threading.Lock()
    seen = [0]

    def wrapped(*a, **kw):
        if when(*a, **kw):
            with lock:
                seen[0] += 1
                mine = seen[0] <= parties
            if mine:
                barrier.wait()
        return orig(*a, **kw)

    setattr(obj, name, wrapped)
    return barrier


def _get(port: int, path: str, params: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path + ("?" + urllib.parse.urlencode(params) if params else ""))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _in_threads(fns) -> list:
    out = [None] * len(fns)

    def run(i, fn):
        try:
            out[i] = fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            out[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 3)
    return out


@pytest.fixture()
def server(served_library):
    """(library, live uvicorn server) over the served library; the test may patch the library's engine."""
    base, db, pics, ids = served_library
    lib = Library(db, create=False)
    with LiveServer(create_app(lib, warm_up=True)) as srv:
        yield lib, srv
    lib.close()


def _search(srv, q: str, mode: str = "hybrid", k: int = 10, timeout: float = 60) -> dict:
    status, body = _get(srv.port, "/api/search", {"q": q, "mode": mode, "k": k}, timeout=timeout)
    assert status == 200, body
    d = json.loads(body)
    d.pop("took_ms")
    return d


# ---------------------------------------------------------------------------- side by side

def test_two_web_searches_are_inside_the_engine_at_once(server):
    lib, srv = server
    barrier = _barrier_on(lib.engine, "hits")   # reached by a search after its signals and fusion
    got = _in_threads([lambda: _search(srv, "red circle"), lambda: _search(srv, "blue square")])
    assert not barrier.broken, "the two searches never were inside the query engine together"
    assert [g["results"][0]["name"] for g in got] == ["red_circle.jpg", "blue_square.jpg"], got


def test_two_hybrid_queries_do_not_queue_for_the_bm25_worker(indexed_library):
    """A hybrid query runs BM25 on the engine's background worker while it embeds the query; a second query
    finding the worker busy runs BM25 itself instead of queueing behind the first."""
    base, db = indexed_library
    with Library(db, create=False) as lib:
        lib.query("red circle", k=3, mode="hybrid")   # load models and caches
        barrier = _barrier_on(lib.engine, "bm25_search", when=lambda text, n, *a, **kw: n > 1)
        got = _in_threads([lambda: lib.query("red circle", k=3, mode="hybrid"),
                           lambda: lib.query("blue square", k=3, mode="hybrid")])
        assert not barrier.broken, got
        assert all(isinstance(g, list) for g in got), got


def test_faiss_searches_share_the_index(tmp_path, monkeypatch):
    """Two searches are inside one VectorIndex at once; a change waits until they are out."""
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vi = VectorIndex(384)
    vi.add(np.arange(1, 51), vecs)
    inside, release = threading.Barrier(3, timeout=WAIT_S), threading.Event()
    orig = VectorIndex._search_flat

    def held(self, *a):
        inside.wait()           # both searches and the test meet here: two readers at once
        release.wait(WAIT_S)
        return orig(self, *a)

    monkeypatch.setattr(VectorIndex, "_search_flat", held)
    results: list = []
    readers = [threading.Thread(target=lambda i=i: results.append(vi.search(vecs[i], 1)[0][0])) for i in (0, 1)]
    for t in readers:
        t.start()
    inside.wait()
    added = threading.Event()
    writer = threading.Thread(target=lambda: (vi.add([99], vecs[2:3]), added.set()))
    writer.start()
    assert not added.wait(0.3), "a change went ahead while searches were inside the index"
    release.set()
    for t in (*readers, writer):
        t.join(WAIT_S)
    assert added.is_set() and sorted(results) == [1, 2] and len(vi) == 51


# ---------------------------------------------------------------------------- same answers

def test_concurrent_searches_give_the_serial_results(server):
    lib, srv = server
    cases = [(q, mode) for q in QUERIES for mode in ("hybrid", "bm25", "dense")]
    serial = {c: _search(srv, *c) for c in cases}
    assert any(d["count"] for d in serial.values())

    def client(t: int):
        return [(c, _search(srv, *c)) for c in cases[t:] + cases[:t]]

    per_thread = _in_threads([lambda t=t: client(t) for t in range(8)])
    for got in per_thread:
        assert isinstance(got, list), got
        for c, d in got:
            assert d == serial[c], c


def test_concurrent_library_queries_give_the_serial_results(indexed_library):
    base, db = indexed_library
    with Library(db, create=False) as lib:
        def run(q):
            return [(h.id, round(h.score, 6)) for h in lib.query(q, k=5, mode="hybrid")]

        serial = {q: run(q) for q in QUERIES}
        per_thread = _in_threads([lambda t=t: [(q, run(q)) for q in QUERIES[t:] + QUERIES[:t]] for t in range(8)])
    for got in per_thread:
        assert isinstance(got, list), got
        assert dict(got) == serial


# ---------------------------------------------------------------------------- thumbnails apart

def test_a_search_never_waits_for_thumbnails(server, served_library, monkeypatch):
    """More thumbnails being made at once than the server has request threads (all held, as a slow huge
    photo would be) leave the searches alone: thumbnails are made on a small pool of their own."""
    lib, srv = server
    base, db, pics, ids = served_library
    busy = threading.Semaphore(0)
    release = threading.Event()
    made = [0]
    lock = threading.Lock()
    orig = thumbs.thumbnail

    def slow(*a, **kw):
        with lock:
            made[0] += 1
        busy.release()
        release.wait(WAIT_S * 3)
        return orig(*a, **kw)

    monkeypatch.setattr(thumbs, "thumbnail", slow)
    n = 48
    assert n > 40   # anyio's default thread limiter: the threads sync endpoints run on
    pid = ids[next(iter(PHOTOS))]
    fetches = [threading.Thread(target=_get, args=(srv.port, f"/thumb/{pid}"), kwargs={"timeout": WAIT_S * 4},
                                daemon=True) for _ in range(n)]
    try:
        for t in fetches:
            t.start()
        for _ in range(2):
            assert busy.acquire(timeout=WAIT_S), "thumbnails were not being made"
        settled, last = time.monotonic(), -1
        while time.monotonic() - settled < 0.5 and time.monotonic() < settled + 10:   # all that start, started
            if made[0] != last:
                settled, last = time.monotonic(), made[0]
            time.sleep(0.05)
        d = _search(srv, "red circle", timeout=WAIT_S)   # answered while every files thread is held
        assert d["results"][0]["name"] == "red_circle.jpg"
        assert made[0] <= serve_app.FILE_WORKERS, made[0]
    finally:
        release.set()
        for t in fetches:
            t.join(WAIT_S)


def test_the_web_server_gives_each_query_half_the_cores_for_scoring(tmp_path):
    """One query at a time (CLI, API) scores on every core; the web server, whose queries run side by side,
    asks the scorer for half of them (Models.scorer_threads) before its first query."""
    import os

    from imgsearch import Library
    from imgsearch.serve.app import create_app

    with Library(tmp_path / "library.db") as lib:
        assert lib.models.scorer_threads is None
        create_app(lib)
        assert lib.models.scorer_threads == max(1, (os.cpu_count() or 1) // 2)
