"""``imgsearch serve --workers N``: N server processes sharing one port.

    from imgsearch.serve.workers import run_workers
    run_workers(sock, db, workers=2, allowed_hosts=..., announce=print)   # blocks until SIGINT / SIGTERM

One Python process runs the Python half of its queries (fusion, hit rows, SQLAlchemy, HTTP parsing) one at a
time under its interpreter lock, however many threads serve them; N processes answer N such queries at once.
Each worker is a fresh interpreter (multiprocessing "spawn": nothing that holds threads or database
connections is forked) with its own Library, models and caches: a worker picks up an index run by itself, as
one process does (the caches are keyed by library identity + revision and reloaded when it changes), and its
thumbnails are made on its own files pool. They share the port: on Linux each listens on a socket of its own
bound beside the server's with SO_REUSEPORT (the kernel shares new connections out over them, see
:data:`REUSE_PORT`), elsewhere all accept on the one socket bound by the server.

The parent only supervises: it reports ready once every worker has loaded and warmed up its library, restarts a
worker that dies after it was ready (more than :data:`MAX_RESTARTS` deaths in a minute stop the server), and on
SIGINT / SIGTERM stops every worker (SIGTERM, then SIGKILL after :data:`STOP_S`) before it returns. A worker
whose parent is gone (killed with SIGKILL) stops by itself. A worker that cannot load the library stops the
server with the worker's one-line error. Each worker runs its models on its share of the cores
(:func:`worker_threads`) and lets its share of :data:`imgsearch.serve.app.QUERY_SLOTS` searches into its query
engine at once (:func:`worker_slots`), so N workers do not oversubscribe the machine.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait as wait_any
from typing import Callable, Iterable

log = logging.getLogger("imgsearch.serve")

MAX_WORKERS = 32
STOP_S = 10.0          # a worker gets this long to finish its requests after SIGTERM, then SIGKILL
PARENT_POLL_S = 0.5    # how often a worker checks that its parent is alive
MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0   # more worker deaths than this within the window stop the server
_SPAWN = multiprocessing.get_context("spawn")
#: Linux: each worker listens on a socket of its own, bound to the same port with SO_REUSEPORT, and the kernel
#: shares new connections out over them at random (by address hash). On one shared socket every idle worker
#: wakes for a new connection and the first one up takes all those queued: 8 clients connecting at once were
#: all on one worker (the other one idle) in 7 of 54 tries; with SO_REUSEPORT in 0 of 60 (by the hash: 2 in
#: 256). Elsewhere: one shared socket.
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def default_workers(cores: int | None = None) -> int:
    """2 where there are 2 cores or more, else 1. Two processes answer concurrent searches on both cores of a
    2-core machine (README, "Load test"), each holding its own copy of the library's models and indexes
    (~350 MiB at 10k photos, ~1 GB at 1M)."""
    cores = cores or os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Intra-op threads of each worker's re-ranking scorer (and of its MiniLM, at most 4): the cores shared out
    over the workers' concurrent queries (two per worker), at least 1, so that N workers do not oversubscribe
    the cores."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // (2 * max(1, workers)))


def worker_slots(workers: int) -> int:
    """Searches each worker lets into its query engine at once: the one-process number shared out."""
    from imgsearch.serve.app import QUERY_SLOTS

    return max(1, QUERY_SLOTS // max(1, workers))


# ---------------------------------------------------------------------------- in a worker

def _watch_parent(parent: int) -> None:
    """SIGTERM this worker (uvicorn's graceful stop, or the default end before it runs) once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def _own_listener(server_sock: socket.socket) -> socket.socket:
    """A listening socket bound with SO_REUSEPORT to the address of the server's (bound, not listening) one;
    this worker's copy of that one is closed."""
    # the same protocol number (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY only on such sockets, and without it a
    # keep-alive connection waits for the client's delayed ACK (40 ms) before each response
    sock = socket.socket(server_sock.family, socket.SOCK_STREAM, server_sock.proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(server_sock.getsockname())
    sock.listen(128)
    server_sock.close()
    return sock


def _models(threads: int):
    """The worker's models: MiniLM and the re-ranking scorer on ``threads`` intra-op threads each."""
    from imgsearch.models import Models

    try:
        from imgsearch.text.embed import TextEmbedder

        embedder = TextEmbedder.load(threads=min(4, threads))
    except Exception:  # noqa: BLE001 - loaded again on the first query, which then says why it cannot be
        embedder = None
    models = Models(embedder=embedder)
    models.scorer_threads = threads
    return models


def _worker(sock, db: str, allowed_hosts, log_level: str, scorer_threads: int, slots: int, conn,
            parent: int) -> None:
    """A worker process: load and warm the library, say "ready" (or the error) on ``conn``, serve on ``sock``."""
    threading.Thread(target=_watch_parent, args=(parent,), name="imgsearch-parent", daemon=True).start()
    lib = None
    try:
        import uvicorn

        from imgsearch.errors import ImgsearchError, storage_error
        from imgsearch.library import Library
        from imgsearch.serve.app import create_app, warm

        try:
            lib = Library(db, create=False, models=_models(scorer_threads))
            warm(lib)
            app = create_app(lib, allowed_hosts=allowed_hosts, query_slots=slots)
            if not _listening(sock):   # (Linux) a socket of this worker's own beside the server's, same port
                sock = _own_listener(sock)
        except ImgsearchError as e:
            conn.send(("error", type(e).__name__, str(e) or type(e).__name__))
            return
        except Exception as e:  # broad: whatever stops a worker is reported by the parent in one line
            mapped = storage_error(e)   # the disk or the database file failed: StoreError's one line
            conn.send(("error", type(mapped).__name__, str(mapped)) if mapped is not None
                      else ("error", "ImgsearchError", f"a server worker could not start: {type(e).__name__}: {e}"))
            return
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
        conn.send(("ready", os.getpid(), ""))
        conn.close()
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reaches the workers too (same process group): a normal stop
        pass
    finally:
        if lib is not None:
            lib.close()


# ---------------------------------------------------------------------------- the parent

class _Worker:
    def __init__(self, args: tuple):
        self.conn, child = _SPAWN.Pipe(duplex=False)
        self.proc = _SPAWN.Process(target=_worker, args=(*args, child, os.getpid()), name="imgsearch-serve-worker",
                                   daemon=False)
        self.proc.start()
        child.close()
        self.ready = False

    def message(self):
        """The worker's ("ready" | "error", ...) message, None when it ended without one."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None


def _error_of(msg) -> Exception:
    from imgsearch import errors

    if msg is None:
        return errors.ImgsearchError("a server worker exited while it was loading the library")
    _, kind, text = msg
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ImgsearchError)):
        cls = errors.ImgsearchError
    try:
        return cls(text)
    except TypeError:   # an error kind that takes more than a message
        return errors.ImgsearchError(text)


def run_workers(sock, db, workers: int, *, allowed_hosts: Iterable[str] | None, log_level: str = "warning",
                announce: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
                ready: Callable[[], None] | None = None) -> None:
    """Serve on ``sock``'s port from ``workers`` processes until SIGINT or SIGTERM; then stop
    them all and return. ``sock``: listening (the workers accept on it), or bound with SO_REUSEPORT and not
    listening (:func:`imgsearch.serve.listen_socket` ``reuse_port``: each worker listens beside it on a socket of
    its own). ``ready()`` is called once every worker has warmed up. Raises the worker's
    :class:`~imgsearch.errors.ImgsearchError` when one cannot load the library (the others are stopped)."""
    from imgsearch.errors import ImgsearchError, UserError

    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    args = (sock, str(db), None if allowed_hosts is None else tuple(allowed_hosts), log_level,
            worker_threads(workers), worker_slots(workers))
    stop = threading.Event()

    def on_signal(_signum, _frame):
        stop.set()

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    pool: list[_Worker] = []
    try:
        pool.extend(_Worker(args) for _ in range(workers))
        announced = False
        restarts: list[float] = []
        # until stopped: a worker's "ready" (or its error: the server stops with it); a worker that dies after
        # it was ready (a crash, the OOM killer) is replaced
        while not stop.is_set():
            loading = {w.conn: w for w in pool if not w.ready}
            running = {w.proc.sentinel: i for i, w in enumerate(pool) if w.ready}
            for obj in wait_any([*loading, *running], timeout=0.5):
                if stop.is_set():   # (Ctrl-C reaches the workers too: one that stopped loading is no error)
                    break
                if obj in loading:
                    w = loading[obj]
                    msg = w.message()
                    if msg is None or msg[0] != "ready":
                        raise _error_of(msg)
                    w.ready = True
                    continue
                dead = pool[running[obj]]
                dead.proc.join()
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(restarts) > MAX_RESTARTS:
                    raise ImgsearchError(f"server workers keep exiting (the last: {_exit_text(dead.proc.exitcode)}): "
                                         "stopping the server")
                announce(f"imgsearch: server worker {dead.proc.pid} exited ({_exit_text(dead.proc.exitcode)}): "
                         "starting another")
                pool[running[obj]] = _Worker(args)
            if not announced and all(w.ready for w in pool) and not stop.is_set():
                announced = True
                if ready is not None:
                    ready()
    finally:
        _stop_all(pool)
        for s, h in handlers.items():
            signal.signal(s, h)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return f"exit status {code}"


def _stop_all(pool: list[_Worker]) -> None:
    """SIGTERM every worker (uvicorn finishes the requests in flight), SIGKILL those still there after STOP_S."""
    for w in pool:
        if w.proc.is_alive():
            try:
                os.kill(w.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_S
    for w in pool:
        w.proc.join(max(0.0, deadline - time.monotonic()))
        if w.proc.is_alive():
            log.warning("server worker %s did not stop in %.0f s: killing it", w.proc.pid, STOP_S)
            w.proc.kill()
            w.proc.join()
        w.conn.close()
