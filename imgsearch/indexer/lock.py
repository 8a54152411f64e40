"""One index run per library at a time: an advisory lock on ``<db>.lock``.

The lock (``flock``) belongs to the open file, which a forked process shares: a DataLoader worker would
keep the lock alive after its parent was killed (``kill -9``) until it noticed, ~5 s later, and a new run
would be refused meanwhile. So a forked child drops its copy at once (:func:`_drop_in_child`, an
``os.register_at_fork`` hook): only the process that took the lock holds it, and its death frees it.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from imgsearch import paths
from imgsearch.errors import StoreError

_held: set[int] = set()   # descriptors of the index locks this process holds


def _drop_in_child() -> None:
    """In a forked child: point the inherited lock descriptors at /dev/null (``dup2``: the number stays
    valid for whatever file object wraps it, but no longer refers to the lock)."""
    if not _held:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in _held:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    finally:
        os.close(null)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


@contextlib.contextmanager
def index_lock(db_path: Path):
    """Held while an index run writes; a second run on the same library fails at once with a clear message."""
    lock = paths.lock_path(db_path)
    try:
        f = open(lock, "a+")
    except OSError as e:
        raise StoreError(f"cannot create the lock file {lock}: {e.strerror or e}") from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"another `imgsearch index` is running on {db_path}; wait for it to finish") from None
            _held.add(f.fileno())
        yield
    finally:
        _held.discard(f.fileno())
        f.close()


def index_running(db_path: Path) -> bool:
    """Whether some process (this one included) holds the library's index lock now: probed without
    blocking and without creating the lock file (a read-only library has none)."""
    try:
        f = open(paths.lock_path(db_path), "rb")
    except OSError:
        return False
    with f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return False
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False
