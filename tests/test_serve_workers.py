"""`imgsearch serve --workers N` (issue 13, defect 6): N server processes share the port; they answer concurrent
searches as one process does, each picks up a change to the library, a worker that dies is replaced, a worker
that cannot open the library stops the server with its error, and the server stops cleanly (no worker left)
on SIGTERM, on Ctrl-C and when the server process itself is killed.

The server tests start the real command (`python -m imgsearch.cli serve --workers 2`) in its own process
session, and find its workers in /proc (Linux).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")

START_S = 180   # the workers load the models and warm up (seconds on a busy 2-core machine)
QUERIES = ["red circle", "blue square on a yellow table", "green triangle tent", "sky above a field",
           "checkerboard floor", "purple kite"]


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _proc_stat(int(d.name))) and int(st[1]) == pid and st[0] != "Z":
            out.append(int(d.name))
    return sorted(out)


def alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] != "Z"   # a zombie has ended (its reaper may be slow in a container)


def cpu_ticks(pid: int) -> int:
    st = _proc_stat(pid)
    return int(st[11]) + int(st[12]) if st else 0


class Served:
    """The real `serve --workers N` command in its own process session; .url once ready, .workers their pids."""

    def __init__(self, db: Path, workers: int = 2):
        self.proc = subprocess.Popen([sys.executable, "-m", "imgsearch.cli", "serve", "--db", str(db), "--port", "0",
                                      "--workers", str(workers)], stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + START_S
        while not any("open http" in ln for ln in self.lines):
            assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.1)
        self.url = re.search(r"open (http://\S+)", "".join(self.lines)).group(1)
        self.port = int(urllib.parse.urlsplit(self.url).port)

    @property
    def workers(self) -> list[int]:
        return [p for p in children(self.proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]

    def search(self, q: str, mode: str = "hybrid", k: int = 6) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)   # a new connection each time
        try:
            conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "mode": mode, "k": k}))
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        assert r.status == 200, body
        d = json.loads(body)
        d.pop("took_ms")
        return d

    def close(self):
        try:   # the whole session: the workers too, even where a test left them orphaned
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture()
def served(served_library):
    base, db, pics, ids = served_library
    srv = Served(db)
    yield srv
    srv.close()


def _gone(pids, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def test_two_workers_answer_concurrent_searches_as_one_replace_a_dead_one_and_stop_on_sigterm(served):
    workers = served.workers
    assert len(workers) == 2, (workers, served.lines)
    cases = [(q, mode) for q in QUERIES for mode in ("hybrid", "bm25", "dense")]
    serial = {c: served.search(*c) for c in cases}   # each on a new connection: either worker answers
    assert serial[("red circle", "hybrid")]["results"][0]["name"] == "red_circle.jpg"
    assert serial[("checkerboard floor", "bm25")]["results"][0]["name"] == "checker.jpg"
    before = {p: cpu_ticks(p) for p in workers}
    got: list = [None] * 8

    def client(t: int):
        try:
            got[t] = [(c, served.search(*c)) for _ in range(2) for c in cases[t:] + cases[:t]]
        except BaseException as e:  # noqa: BLE001 - reported below
            got[t] = e

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for g in got:
        assert isinstance(g, list), g
        for c, d in g:
            assert d == serial[c], c
    assert all(cpu_ticks(p) > before[p] for p in workers), "a worker answered nothing"

    os.kill(workers[0], signal.SIGKILL)      # a crash, the OOM killer: another worker takes its place
    deadline = time.monotonic() + START_S
    while not any("starting another" in ln for ln in served.lines) or len(served.workers) < 2:
        assert time.monotonic() < deadline and served.proc.poll() is None, served.lines
        time.sleep(0.1)
    now = served.workers
    assert workers[1] in now and workers[0] not in now
    assert [served.search("red circle")["results"][0]["name"] for _ in range(6)] == ["red_circle.jpg"] * 6

    everything = children(served.proc.pid)
    served.proc.send_signal(signal.SIGTERM)   # a service manager stopping the server
    assert served.proc.wait(30) == 0, served.lines
    assert _gone(everything), [p for p in everything if alive(p)]
    assert any("server stopped" in ln for ln in served.lines)
    assert not any("Traceback" in ln for ln in served.lines), "".join(served.lines)


def test_ctrl_c_stops_the_server_and_every_worker(served):
    everything = children(served.proc.pid)
    assert len(served.workers) == 2
    os.killpg(served.proc.pid, signal.SIGINT)   # Ctrl-C in a terminal: the whole foreground process group
    assert served.proc.wait(30) == 0, served.lines
    assert _gone(everything), [p for p in everything if alive(p)]
    assert not any("Traceback" in ln for ln in served.lines), "".join(served.lines)


def test_workers_stop_when_the_server_process_is_killed(served):
    workers = served.workers
    assert len(workers) == 2
    os.kill(served.proc.pid, signal.SIGKILL)   # no chance to stop them: they notice their parent is gone
    served.proc.wait()
    assert _gone(workers), "orphaned server workers: " + str([p for p in workers if alive(p)])


def test_every_worker_picks_up_a_change_to_the_library(served_library, tmp_path):
    """A change to the library (an index run: here captions rewritten through the store, new revision) is
    searched by every worker: each reloads its caches when the revision changes."""
    import shutil

    from imgsearch import Library
    from serve_library import relabel

    base, db, pics, ids = served_library
    shutil.copytree(db.parent, tmp_path / "lib")
    copy = tmp_path / "lib" / db.name
    srv = Served(copy)
    try:
        workers = srv.workers
        assert srv.search("zebra crossing", mode="bm25")["count"] == 0
        before = {p: cpu_ticks(p) for p in workers}
        with Library(copy, create=False) as lib:
            relabel(lib, {str(pics / "sky.jpg"): "a zebra crossing in the rain"})
        for mode in ("bm25", "dense", "hybrid"):
            for _ in range(8):   # a new connection each time: both workers answer some
                assert srv.search("zebra crossing", mode=mode)["results"][0]["name"] == "sky.jpg", mode
        assert all(cpu_ticks(p) > before[p] for p in workers), "a worker answered nothing"
    finally:
        srv.close()


def test_worker_count_is_checked(served_library):
    from imgsearch.errors import UserError
    from imgsearch.serve import serve_command

    base, db, pics, ids = served_library
    with pytest.raises(UserError, match="--workers must be between 1 and"):
        serve_command(db, port=0, workers=0)
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(UserError, match="cannot listen"):
            serve_command(db, port=busy.getsockname()[1], workers=2)
    finally:
        busy.close()
    r = subprocess.run([sys.executable, "-m", "imgsearch.cli", "serve", "--db", str(base / "missing.db"),
                        "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no library" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_worker_error_is_the_servers_one_line_error(tmp_path):
    from imgsearch.errors import ImgsearchError, StoreError
    from imgsearch.serve import listen_socket
    from imgsearch.serve.workers import _error_of, run_workers

    sock = listen_socket("127.0.0.1", 0)
    ready = []
    try:   # the workers cannot open the library (gone since the server checked it): the server stops with their error
        with pytest.raises(StoreError, match="no library"):
            run_workers(sock, tmp_path / "gone" / "library.db", 2, allowed_hosts=None, ready=lambda: ready.append(1))
    finally:
        sock.close()
    left = [p for p in children(os.getpid()) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert not ready and not left, left

    e = _error_of(("error", "StoreError", "library.db is not an imgsearch library"))
    assert type(e) is StoreError and str(e) == "library.db is not an imgsearch library"
    assert type(_error_of(("error", "KeyError", "boom"))) is ImgsearchError
    assert "exited while it was loading" in str(_error_of(None))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT sharing is Linux's")
def test_a_workers_own_socket_shares_the_port_and_answers_without_delay():
    """On Linux a worker listens on a socket of its own beside the server's (SO_REUSEPORT). It must be a TCP
    socket by protocol number: asyncio turns Nagle off (TCP_NODELAY) only on those, and with Nagle on every
    response on a keep-alive connection waited 40 ms for the client's delayed ACK (80 ms searches, not 33)."""
    import asyncio
    import socket

    from imgsearch.serve import listen_socket
    from imgsearch.serve.workers import _listening, _own_listener

    server = listen_socket("127.0.0.1", 0, reuse_port=True)   # holds the port, takes no connection itself
    try:
        assert not _listening(server)
        mine, other = _own_listener(server.dup()), _own_listener(server.dup())   # two workers, one port
        assert mine.getsockname() == other.getsockname() == server.getsockname() and _listening(mine)
        other.close()

        async def nodelay() -> int:
            got = asyncio.get_running_loop().create_future()

            class P(asyncio.Protocol):
                def connection_made(self, transport):
                    got.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                                 socket.TCP_NODELAY))

            srv = await asyncio.get_running_loop().create_server(P, sock=mine)
            with socket.create_connection(server.getsockname()[:2], timeout=10):
                value = await asyncio.wait_for(got, 10)
            srv.close()
            return value

        assert asyncio.run(nodelay()) == 1
    finally:
        server.close()


def test_each_worker_scores_on_its_share_of_the_cores():
    from imgsearch.serve.workers import worker_threads

    assert worker_threads(1, cores=2) == 1 and worker_threads(2, cores=2) == 1
    assert worker_threads(1, cores=16) == 8 and worker_threads(4, cores=16) == 2 and worker_threads(32, cores=16) == 1

