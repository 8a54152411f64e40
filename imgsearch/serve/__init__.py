"""``imgsearch serve``: a local web page to search the library by eye.

    from imgsearch.serve import serve_command
    serve_command(db=None, host="127.0.0.1", port=8765)    # blocks until Ctrl-C

The app itself is :func:`imgsearch.serve.app.create_app` (FastAPI). Importing this package is
cheap; FastAPI and uvicorn are imported when a server starts.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from imgsearch.serve.app import create_app

__all__ = ["serve_command", "create_app", "is_loopback", "host_warning", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    h = (host or "").strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning printed when the server listens beyond this machine (None for loopback)."""
    if is_loopback(host):
        return None
    return (f"imgsearch: warning: listening on {host}, so other machines on the network can reach this "
            "server. There is no password: anyone who can reach the port sees every photo in the library. "
            "Use --host 127.0.0.1 (the default) to keep it on this computer.")


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0 = any free port), listening; :class:`UserError` with a clear
    reason. ``reuse_port``: bound with SO_REUSEPORT and not listening — it holds the port for the server's worker
    processes, which listen on their own sockets bound beside it (serve/workers.py)."""
    from imgsearch.errors import UserError

    if not 0 <= int(port) <= 65535:
        raise UserError(f"--port must be between 0 and 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"cannot listen on {host}: unknown host ({e})") from None
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        if not reuse_port:
            sock.listen(128)  # connections queue from now on, before the server loop starts
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def serve_command(db: str | os.PathLike | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                  *, log_level: str = "warning", workers: int | None = None) -> None:
    """Open the library, load its models and indexes once, and serve the search page until Ctrl-C
    (or SIGTERM); then return normally.

    Binds ``127.0.0.1`` unless ``host`` says otherwise (then warns on stderr, and accepts any
    Host header). ``workers``: server processes sharing the port, each with its own library, models and
    caches (:mod:`imgsearch.serve.workers`; default :func:`~imgsearch.serve.workers.default_workers`: 2 on 2
    cores or more); 1 serves from this process. Raises an :class:`imgsearch.errors.ImgsearchError`
    for a missing library or a port that cannot be used."""
    import uvicorn

    from imgsearch.library import Library
    from imgsearch.serve.app import LOCAL_HOSTS, create_app, warm
    from imgsearch.serve.workers import MAX_WORKERS, REUSE_PORT, default_workers, run_workers

    workers = default_workers() if workers is None else int(workers)
    if not 1 <= workers <= MAX_WORKERS:
        from imgsearch.errors import UserError

        raise UserError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    lib = Library(db, create=False)
    # loopback: only requests addressed to a loopback name (DNS-rebinding guard); else any Host
    allowed = (*LOCAL_HOSTS, host.strip("[]").lower()) if warning is None else None
    sock = None
    if workers > 1:   # the workers open the library themselves: this process only checked that it opens
        path = lib.path
        lib.close()
        try:
            sock = listen_socket(host, port, reuse_port=REUSE_PORT)
            print(f"imgsearch: loading {path} in {workers} worker processes ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            run_workers(sock, path, workers, allowed_hosts=allowed, log_level=log_level,
                        ready=lambda: print(f"imgsearch: ready in {time.perf_counter() - t0:.1f} s: open "
                                            f"{url_for(sock)}  (Ctrl-C to stop)", file=sys.stderr, flush=True))
            print("imgsearch: server stopped", file=sys.stderr, flush=True)
        finally:
            if sock is not None:
                sock.close()
        return
    try:
        sock = listen_socket(host, port)
        print(f"imgsearch: loading {lib.path} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        warm(lib)
        app = create_app(lib, allowed_hosts=allowed)
        print(f"imgsearch: ready in {time.perf_counter() - t0:.1f} s: open {url_for(sock)}  (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: that is how a server stops
            pass
        print("imgsearch: server stopped", file=sys.stderr, flush=True)
    finally:
        if sock is not None:
            sock.close()
        lib.close()


def __getattr__(name: str):
    if name == "create_app":
        from imgsearch.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'imgsearch.serve' has no attribute {name!r}")
