"""Where a library lives, and how photo paths compare to the folders (roots) they were indexed under.

One library is one folder::

    <dir>/library.db                  SQLite (WAL: also library.db-wal, library.db-shm)
    <dir>/library.db.captions.faiss   FAISS cache over caption embeddings (rebuilt from SQLite when stale)
    <dir>/library.db.images.faiss     FAISS cache over image embeddings
    <dir>/library.db.labels.faiss     FAISS cache over zero-shot label vectors
    <dir>/library.db.lock             held while an index run writes
    <dir>/thumbs/                     thumbnails

The database path is, in order: an explicit path, ``$IMGSEARCH_DB``,
``$XDG_DATA_HOME/imgsearch/library.db``, ``~/.local/share/imgsearch/library.db``.
An explicit path (or ``$IMGSEARCH_DB``) naming an existing directory means
``<that directory>/library.db``.
"""
from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "library.db"
ENV_DB = "IMGSEARCH_DB"


def default_db_path() -> Path:
    env = os.environ.get(ENV_DB)
    if env:
        return _as_db_file(Path(env))
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return (base / "imgsearch" / DB_NAME).absolute()


def _as_db_file(p: Path) -> Path:
    p = p.expanduser()
    if p.is_dir():
        p = p / DB_NAME
    return p.absolute()


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """The library's database file (absolute; not created)."""
    if path is None or str(path) == "":
        return default_db_path()
    return _as_db_file(Path(path))


def captions_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.captions.faiss")


def images_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.images.faiss")


def labels_faiss_path(db: str | os.PathLike) -> Path:
    return Path(f"{db}.labels.faiss")


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
