"""Engine and sessions for a library's SQLite file.

* WAL journal (readers never block the writer), ``synchronous=NORMAL`` (a killed
  process never loses a committed batch; only a power cut can drop the last ones) — except while a
  bulk ingest writes: a rollback journal with ``synchronous=FULL`` then (store/journal.py),
  foreign keys on, ``busy_timeout`` so a query waits for a writing batch instead of failing.
* Real transactions: the pysqlite driver's implicit-transaction handling is turned off
  and we emit ``BEGIN`` ourselves, so DDL in migrations is transactional too and a
  write batch can take the write lock up front (``BEGIN IMMEDIATE``).
* :func:`open_store` applies the Alembic migrations shipped inside the package
  (``upgrade head``) when the file is behind, and refuses files that are not libraries. imgsearch never
  leaves a 0-byte ``library.db`` (a new library is built under a temporary name and linked into place),
  so an empty one is no library: refused by searches, replaced by a new library (with a warning) when
  ``create``. Two processes upgrading the same library take turns (``BEGIN IMMEDIATE``).
* A read-only library (its folder or file cannot be written, or ``read_only=True``) is opened with
  SQLite's ``mode=ro`` — or ``immutable=1`` when even that cannot open it (a WAL library without its
  ``-shm`` file on a read-only medium) — and every write is refused with :class:`ReadOnlyError`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from imgsearch import paths as _paths
from imgsearch.errors import ReadOnlyError, StoreError, storage_error
from imgsearch.files import lock_temp, remove_stale_temps

from . import journal
from .models import Meta

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
REVISION_KEY = "revision"
LIBRARY_ID_KEY = "library_id"    # a random hex id given at creation (migration 0006)
# The page size of a new library: SQLite's usual 4 KiB, set explicitly. 64 KiB pages were measured (bench/README.md,
# "Ingest rate", session 15; bench/page_size.py): a photo's record (~6.5 KB) and its cells (12.6 KB) then fit a page
# instead of a chain of overflow pages, and some bulk ingests ran faster (1M rows once in 191 s against 226 s), though
# not steadily; but reading the rows of 40 hits copied a 64 KiB page each into SQLite's cache (5.3-6.7 ms against
# 2.8-4.4 ms), a cost every query pays. Memory-mapped reads (mmap_size) take that copy away at either size, but turn a
# read error of the disk into a SIGBUS crash instead of an error message: not done.
PAGE_SIZE = 4096


def make_engine(path: str | os.PathLike, *, read_only: bool = False, immutable: bool = False) -> Engine:
    """An engine on the SQLite file ``path``; ``read_only``: opened with ``mode=ro`` (``immutable``: also
    ``immutable=1``, no locks and no ``-shm`` file: only for a file nobody can write)."""
    path = Path(path)
    kw: dict = {}
    if read_only or immutable:
        uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro" + ("&immutable=1" if immutable else "")
        kw["creator"] = lambda: sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}, **kw,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if read_only or immutable:
                cur.execute("PRAGMA query_only = ON")
            else:   # WAL (and synchronous = NORMAL), except during a bulk ingest: store/journal.py
                journal.on_connect(cur, path, BUSY_TIMEOUT_MS)
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


# ---------------------------------------------------------------- migrations

def alembic_config(connection=None):
    """A programmatic Alembic Config (no alembic.ini) pointing at the package's migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def include_name(name, type_, parent_names) -> bool:
    """For Alembic autogenerate: ignore the FTS5 table and its shadow tables (raw DDL in 0003)."""
    return not (type_ == "table" and name and name.startswith("photo_fts"))


def head_from_files() -> str | None:
    """The head revision read from the version file names (``NNNN_*.py``, a linear history),
    so that opening an up-to-date library does not need to import Alembic at all."""
    try:
        revs = [m.group(1) for f in os.listdir(MIGRATIONS_DIR / "versions")
                if (m := re.match(r"(\d{4})_\w+\.py$", f))]
    except OSError:
        return None
    return max(revs) if revs else None


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, target: str = "head") -> None:
    """Run ``alembic upgrade <target>`` on this engine, in one transaction that takes the write lock first
    (``BEGIN IMMEDIATE``): a second process upgrading the same library waits for the first (busy_timeout)
    and then finds, inside its own transaction, nothing left to do — instead of failing with "database is
    locked" when its read snapshot could not become a write."""
    from alembic import command

    with engine.execution_options(sqlite_immediate=True).connect() as conn:
        conn.begin()
        command.upgrade(alembic_config(conn), target)
        if conn.in_transaction():
            conn.commit()


# ---------------------------------------------------------------- revision helpers

def get_revision(session_or_conn) -> int:
    row = session_or_conn.execute(select(Meta.value).where(Meta.key == REVISION_KEY)).first()
    return int(row[0]) if row else 0


def bump_revision(session_or_conn) -> int:
    """Increment ``meta.revision`` inside the caller's transaction; returns the new value."""
    session_or_conn.execute(
        text(
            "INSERT INTO meta(key, value) VALUES (:k, '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        ),
        {"k": REVISION_KEY},
    )
    return get_revision(session_or_conn)


def get_meta(session_or_conn, key: str, default: str | None = None) -> str | None:
    row = session_or_conn.execute(select(Meta.value).where(Meta.key == key)).first()
    return row[0] if row else default


def set_meta(session_or_conn, key: str, value: str) -> None:
    session_or_conn.execute(
        text("INSERT INTO meta(key, value) VALUES (:k, :v) ON CONFLICT(key) DO UPDATE SET value = :v"),
        {"k": key, "v": value},
    )


# ---------------------------------------------------------------- the store

@dataclass
class Store:
    path: Path
    engine: Engine
    read_only: bool = False     # opened read-only: searching only, every write() raises ReadOnlyError

    def __post_init__(self):
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)
        self._watch_lock = threading.Lock()
        self._watch = None           # (pid, sqlite3 connection) kept to watch PRAGMA data_version
        self._seen: tuple[int, int] | None = None     # (data_version, revision) last read

    def session(self) -> Session:
        """A session for reads (deferred transactions)."""
        return self._sessions()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction (``BEGIN IMMEDIATE``): commits on success, rolls back on error."""
        if self.read_only:
            raise ReadOnlyError(f"read-only library: searching only ({self.path})")
        with self._writer() as s, s.begin():
            yield s

    def revision(self) -> int:
        """``meta.revision`` now. Read from the database only when it changed since the last read: SQLite's
        ``PRAGMA data_version``, on a connection kept for it, changes whenever another connection (in this
        process or another) commits, and costs ~10 µs where the read costs ~0.2 ms — and every query checks
        the revision of each cache it uses."""
        with self._watch_lock:
            try:
                conn = self._watch_connection()
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if self._seen is not None and self._seen[0] == version:
                    return self._seen[1]
                rows = conn.execute("SELECT value FROM meta WHERE key = ?", (REVISION_KEY,)).fetchall()
                rev = int(rows[0][0]) if rows else 0
                self._seen = (version, rev)
                return rev
            except sqlite3.Error:
                self._close_watch()
        with self.engine.connect() as conn:
            return get_revision(conn)

    def _watch_connection(self):
        if self._watch is None or self._watch[0] != os.getpid():    # never a connection made before a fork
            raw = self.engine.raw_connection()
            raw.detach()             # out of the pool: this one only ever runs the two reads above
            self._watch, self._seen = (os.getpid(), raw), None
        return self._watch[1]

    def _close_watch(self) -> None:
        watch, self._watch, self._seen = self._watch, None, None
        if watch is not None and watch[0] == os.getpid():
            with contextlib.suppress(Exception):
                watch[1].close()

    def identity(self) -> str:
        """The library's random id (meta.library_id, given when it was created; it never changes)."""
        ident = getattr(self, "_identity", None)
        if ident is None:
            with self.engine.connect() as conn:
                ident = get_meta(conn, LIBRARY_ID_KEY) or "none"
            self._identity = ident
        return ident

    def cache_key(self) -> str:
        """What a derived file (FAISS, BM25 cache) must carry to be used: this library at its current
        revision, as ``"<library id>@<revision>"``. A new library.db at the same path has another id, so a
        cache left behind by the old one never matches."""
        return f"{self.identity()}@{self.revision()}"

    def close_idle(self) -> None:
        """This process's idle connections to the library closed (the pool's, the revision watch's); they are
        opened again when next needed. Connections in use are left as they are."""
        with self._watch_lock:
            self._close_watch()
        self.engine.dispose()

    def close(self) -> None:
        self.close_idle()


def _check_is_library(engine: Engine, path: Path) -> None:
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
    except DatabaseError as e:
        raise StoreError(f"{path} is not an imgsearch library (not a readable SQLite database: {_orig(e)})") from None
    if names and "alembic_version" not in names:
        raise StoreError(f"{path} is a SQLite database but not an imgsearch library")


def _orig(e: Exception) -> str:
    return str(getattr(e, "orig", None) or e).strip()


def open_store(path: str | os.PathLike, *, create: bool = True, upgrade: bool = True,
               read_only: bool | None = None) -> Store:
    """Open (and create / migrate to head) the library database at ``path``.

    ``read_only``: None decides by itself (:func:`imgsearch.paths.is_read_only`: ``$IMGSEARCH_READ_ONLY``,
    or the file or its folder cannot be written); True opens it read-only whatever the permissions say
    (tests, and root, for whom a chmod'ed folder is still writable)."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a library database")
    if read_only is None:
        read_only = _paths.is_read_only(path)
    if not path.exists():
        if read_only:
            raise StoreError(f"no library at {path} (opened read-only: nothing can be created there)")
        if not create:
            raise StoreError(f"no library at {path} (run `imgsearch index FOLDER` first)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the library folder {path.parent}: {e.strerror or e}") from None
        if not _paths.folder_writable(path.parent):
            raise StoreError(f"cannot create a library in {path.parent}: the folder is read-only")
        _create(path)
    elif not os.access(path, os.R_OK):
        raise StoreError(f"cannot read the library {path}: permission denied")
    elif path.is_file() and path.stat().st_size == 0:
        # imgsearch never leaves an empty file (a new library is linked into place whole): it was truncated,
        # copied badly or made by another program. Nothing in it to lose, nothing to search.
        if read_only or not create:
            raise StoreError(f"{path} is empty (0 bytes), not a library: restore it from a backup, or run "
                             "`imgsearch index FOLDER` to start a new library there")
        log.warning("%s was empty (0 bytes), not a library: started a new library there", path)
        _create(path)
    if not read_only:
        remove_stale_temps(path.parent, path.name)   # what killed writes (cache saves, a creation) left

    engine = _read_only_engine(path) if read_only else make_engine(path)
    try:
        fast_head = head_from_files()
        if fast_head is not None and path.is_file() and path.stat().st_size > 0:
            try:
                with engine.connect() as conn:
                    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
                if row is not None and row[0] == fast_head:
                    return Store(path=path, engine=engine, read_only=read_only)  # up to date: no Alembic import
            except (OperationalError, DatabaseError):
                pass  # not a library / no table yet: the full checks below say which
        _check_is_library(engine, path)
        current = current_revision(engine)
        head = head_revision()
        if current != head:
            from alembic.script import ScriptDirectory

            known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
            if current is not None and current not in known:
                raise StoreError(
                    f"{path} was written by a newer imgsearch (schema {current}); upgrade imgsearch to open it"
                )
            if read_only:
                raise ReadOnlyError(f"{path} needs a schema upgrade ({current} → {head}) and is read-only: open "
                                    "it once where it can be written")
            if not upgrade:
                raise StoreError(f"{path} needs a schema upgrade ({current} → {head})")
            migrate(engine, "head")
    except StoreError:
        engine.dispose()
        raise
    except (OperationalError, DatabaseError, sqlite3.Error) as e:
        engine.dispose()
        mapped = storage_error(e, path)
        if mapped is not None and "unable to open" not in str(mapped):
            raise mapped from None
        raise StoreError(f"cannot open the library {path}: {_orig(e)}") from None
    return Store(path=path, engine=engine, read_only=read_only)


def _read_only_engine(path: Path) -> Engine:
    """A read-only engine on ``path``: ``mode=ro``; ``immutable=1`` when that cannot open it — a WAL
    library without its ``-shm`` file in a folder nobody can write (SQLite cannot make the file)."""
    engine = make_engine(path, read_only=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").first()
        return engine
    except (OperationalError, DatabaseError):
        engine.dispose()
    if _paths.folder_writable(path.parent) and not _paths.read_only_requested():
        return make_engine(path, read_only=True)    # the error was not the medium's: the checks say what
    if journal.hot_journal(path):   # immutable=1 would read the file as an interrupted commit left it
        raise StoreError(f"the last write to {path} was interrupted ({path.name}-journal holds what it changed): "
                         "open the library once where it can be written, to roll that write back")
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        log.warning("%s: its last writes (%s) cannot be read on a read-only medium without %s-shm",
                    path, wal.name, path.name)
    return make_engine(path, immutable=True)


def _create(path: Path) -> None:
    """Make a new, migrated library at ``path`` atomically: built under a temporary name beside it, then
    linked into place, so that a killed or failed creation never leaves a half-made (or 0-byte) library.db.
    If another process made the library meanwhile, theirs is kept."""
    tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise StoreError(f"cannot create the library {path}: {e.strerror or e}") from None
    try:
        lock_temp(fd)                 # marks it as being written (files.remove_stale_temps)
        engine = make_engine(tmp)
        try:
            # the page size is fixed by the file's first write, before WAL mode (which then keeps it)
            with contextlib.closing(sqlite3.connect(tmp)) as raw:
                raw.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                raw.execute("PRAGMA journal_mode = WAL").fetchone()
            migrate(engine, "head")
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except (OperationalError, DatabaseError, sqlite3.Error) as e:
            raise storage_error(e, path) or StoreError(f"cannot create the library {path}: {_orig(e)}") from None
        finally:
            engine.dispose()
        try:
            os.link(tmp, path)        # fails if the library appeared meanwhile: theirs is used
        except FileExistsError:
            if path.stat().st_size == 0:   # an empty file (see open_store), not a library: ours replaces it
                os.replace(tmp, path)
        except OSError:               # no hard links on this file system (FAT, some shares)
            if not path.exists():
                os.replace(tmp, path)
    except OSError as e:
        raise storage_error(e, path) or StoreError(f"cannot create the library {path}: {e.strerror or e}") from None
    finally:
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(OSError):
                p.unlink()
        os.close(fd)
