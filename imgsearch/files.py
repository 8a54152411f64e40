"""Small file helpers shared by every part: the cache folder, SHA-256 of a file, atomic replacement.

Atomic: written to a temporary file beside the target, fsynced, then renamed over it, so a reader (or a
crash) only ever sees the old file or the whole new one.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import IO, Iterator


def cache_dir() -> Path:
    """Where rebuildable model artifacts live: $IMGSEARCH_CACHE, else $XDG_CACHE_HOME/imgsearch, else
    ~/.cache/imgsearch."""
    env = os.environ.get("IMGSEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imgsearch"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed through one reused ``chunk``-sized buffer (hashlib releases
    the GIL)."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it is fsynced (``durable``) and renamed over
    ``path``. ``durable=False`` skips the fsync: for files cheap to make again (thumbnails)."""
    import tempfile   # not at import time: an embedder-only process never writes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8)."""
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
