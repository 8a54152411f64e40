"""Small file helpers shared by every part: the cache folder, SHA-256 of a file, atomic replacement.

Atomic: written to a temporary file beside the target, fsynced, then renamed over it, so a reader (or a
crash) only ever sees the old file or the whole new one. The temporary file (``<name>.<random>.tmp``) is
locked (``flock``) while it is written, so a killed writer's leftover can be told from a live one and
removed (:func:`remove_stale_temps`, called before every write and when a library is opened).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import IO, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale temporary files are told by their age alone
    fcntl = None

TEMP_SUFFIXES = (".tmp", ".tmp-wal", ".tmp-shm", ".tmp-journal")   # ours, and SQLite's beside a new library
# An unlocked temporary file this old is a dead writer's: a live writer locks its file microseconds after making
# it (lock_temp), so half a second is a wide margin; where there are no locks, only age tells.
STALE_AFTER_S = 0.5 if fcntl is not None else 3600.0


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
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True,
                clean: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it is fsynced (``durable``) and renamed over
    ``path``. ``durable=False`` skips the fsync: for files cheap to make again (thumbnails). ``clean``: first
    remove the temporary files of ``path`` that killed writers left (False for folders of many files)."""
    import tempfile   # not at import time: an embedder-only process never writes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        lock_temp(fd)
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


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = True, clean: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8)."""
    with atomic_open(path, "wb", durable=durable, clean=clean) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def lock_temp(fd: int) -> None:
    """Mark a temporary file as being written (held until its descriptor is closed)."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temps(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove ``<prefix>.*.tmp`` files (and a new library's ``.tmp-wal`` / ``-shm`` / ``-journal``) in
    ``folder`` that no live writer holds: not locked, and not modified for :data:`STALE_AFTER_S`. Returns what
    was removed; a folder that cannot be read or written is left as it is."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        name = e.name
        if not (name.startswith(prefix + ".") and name.endswith(TEMP_SUFFIXES)):
            continue
        try:
            if not e.is_file(follow_symlinks=False) or now - e.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
                continue
            if fcntl is not None and name.endswith(".tmp"):
                fd = os.open(e.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a live writer holds it: skip
                except OSError:
                    continue
                else:
                    os.unlink(e.path)
                finally:
                    os.close(fd)
            else:
                base = name[: name.rindex(".tmp")] + ".tmp"     # a sidecar goes with (or after) its temp
                if os.path.exists(os.path.join(folder, base)):
                    continue
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            continue
    return removed
