"""One index run per library at a time: an advisory lock on ``<db>.lock``."""
from __future__ import annotations

import contextlib
from pathlib import Path

from imgsearch import paths
from imgsearch.errors import StoreError


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
        yield
    finally:
        f.close()
