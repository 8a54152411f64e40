"""Where a library lives, and how photo paths compare to the folders (roots) they were indexed under.

One library is one folder::

    <dir>/library.db                  SQLite (WAL: also library.db-wal, library.db-shm)
    <dir>/library.db.captions.faiss   FAISS cache over caption embeddings (rebuilt from SQLite when stale)
    <dir>/library.db.images.faiss     FAISS cache over image embeddings
    <dir>/library.db.labels.faiss     FAISS cache over zero-shot label vectors
    <dir>/library.db.visual.faiss     FAISS cache over visual vectors (query by example)
    <dir>/library.db.lock             held while an index run writes
    <dir>/thumbs/                     thumbnails

The database path is, in order: an explicit path, ``$IMGSEARCH_DB``,
``$XDG_DATA_HOME/imgsearch/library.db``, ``~/.local/share/imgsearch/library.db``.
An explicit path (or ``$IMGSEARCH_DB``) naming an existing directory, or ending with a path separator,
means ``<that directory>/library.db``.

A library whose folder cannot be written (a read-only mount, a DVD, a share mounted read-only), or
opened with ``read_only=True`` / ``$IMGSEARCH_READ_ONLY=1``, is searched only: it keeps its files as
they are and caches what it builds in ``<user cache>/libraries/<hash of its absolute path>/``
(:func:`user_cache_dir`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

DB_NAME = "library.db"
ENV_DB = "IMGSEARCH_DB"
ENV_READ_ONLY = "IMGSEARCH_READ_ONLY"


def default_db_path() -> Path:
    env = os.environ.get(ENV_DB)
    if env:
        return _as_db_file(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return (base / "imgsearch" / DB_NAME).absolute()


def _as_db_file(p: str | os.PathLike) -> Path:
    raw = os.fspath(p)
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    folder = raw.endswith(seps) or raw.endswith(tuple(s + "." for s in seps)) or raw in (".", "..")
    p = Path(raw).expanduser()
    if folder or p.is_dir():
        p = p / DB_NAME
    return p.absolute()


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """The library's database file (absolute; not created). A path that is a folder, or is written like
    one (``some/folder/``), means the ``library.db`` inside it."""
    if path is None or os.fspath(path) == "":
        return default_db_path()
    return _as_db_file(path)


def read_only_requested() -> bool:
    """``$IMGSEARCH_READ_ONLY`` is set to something other than "", "0", "no" or "false"."""
    return os.environ.get(ENV_READ_ONLY, "").strip().lower() not in ("", "0", "no", "false")


def folder_writable(folder: str | os.PathLike) -> bool:
    """Files can be made in ``folder``: permission (``os.access``) and not a read-only file system
    (``statvfs``: ``os.access`` answers yes to root on a folder chmod'ed read-only, not on a read-only mount)."""
    folder = os.fspath(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        return not os.statvfs(folder).f_flag & os.ST_RDONLY
    except (OSError, AttributeError):  # pragma: no cover - no statvfs (Windows)
        return True


def is_read_only(db: str | os.PathLike) -> bool:
    """An existing library that cannot be written: asked for (``$IMGSEARCH_READ_ONLY``), its file is not
    writable, or its folder is not (SQLite makes ``-wal`` / ``-shm`` files beside it)."""
    db = Path(db)
    if read_only_requested():
        return True
    if not db.exists():
        return False
    return not os.access(db, os.W_OK) or not folder_writable(db.parent)


def user_cache_dir(db: str | os.PathLike) -> Path:
    """Where a read-only library's caches (FAISS, BM25, thumbnails) go: a folder of the user cache
    (``files.cache_dir()``) named by a hash of the library's absolute path."""
    from imgsearch.files import cache_dir

    key = hashlib.sha256(os.fsencode(os.path.abspath(os.fspath(db)))).hexdigest()[:20]
    return cache_dir() / "libraries" / key


def captions_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.captions.faiss")


def images_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.images.faiss")


def labels_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.labels.faiss")


def visual_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.visual.faiss")


def bm25_cache_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.bm25")


def lock_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.lock")


def thumbs_dir(db: str | os.PathLike) -> Path:
    return Path(db).parent / "thumbs"


def library_files(db: str | os.PathLike) -> list[Path]:
    """Every file that belongs to the library (existing or not), for size-on-disk and clean-up."""
    db = Path(db)
    return [
        db,
        Path(f"{db}-wal"),
        Path(f"{db}-shm"),
        captions_faiss_path(db),
        images_faiss_path(db),
        labels_faiss_path(db),
        visual_faiss_path(db),
        bm25_cache_path(db),
    ]


def resolve_root(root: str | os.PathLike) -> str:
    """Absolute root as :func:`imgsearch.indexer.scan.scan` reports paths under it."""
    p = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if os.path.isdir(p):
        return os.path.realpath(p)
    return os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies below it (string comparison on resolved paths)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)
