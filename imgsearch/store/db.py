"""Engine and sessions for a library's SQLite file.

* WAL journal (readers never block the writer), ``synchronous=NORMAL`` (a killed
  process never loses a committed batch; only a power cut can drop the last ones),
  foreign keys on, ``busy_timeout`` so a query waits for a writing batch instead of failing.
* Real transactions: the pysqlite driver's implicit-transaction handling is turned off
  and we emit ``BEGIN`` ourselves, so DDL in migrations is transactional too and a
  write batch can take the write lock up front (``BEGIN IMMEDIATE``).
* :func:`open_store` applies the Alembic migrations shipped inside the package
  (``upgrade head``) when the file is behind, and refuses files that are not libraries.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from imgsearch.errors import StoreError

from .models import Meta

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
REVISION_KEY = "revision"
LIBRARY_ID_KEY = "library_id"    # a random hex id given at creation (migration 0006)


def make_engine(path: str | os.PathLike) -> Engine:
    path = Path(path)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA journal_mode = WAL").fetchone()   # stays as it is on a read-only medium
            cur.execute("PRAGMA synchronous = NORMAL")
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
    """Run ``alembic upgrade <target>`` on this engine, in one transaction."""
    from alembic import command

    with engine.connect() as conn:
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

    def __post_init__(self):
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)

    def session(self) -> Session:
        """A session for reads (deferred transactions)."""
        return self._sessions()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction (``BEGIN IMMEDIATE``): commits on success, rolls back on error."""
        with self._writer() as s, s.begin():
            yield s

    def revision(self) -> int:
        with self.engine.connect() as conn:
            return get_revision(conn)

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

    def close(self) -> None:
        self.engine.dispose()


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


def open_store(path: str | os.PathLike, *, create: bool = True, upgrade: bool = True) -> Store:
    """Open (and create / migrate to head) the library database at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a library database")
    if not path.exists():
        if not create:
            raise StoreError(f"no library at {path} (run `imgsearch index FOLDER` first)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the library folder {path.parent}: {e.strerror or e}") from None
    elif not os.access(path, os.R_OK):
        raise StoreError(f"cannot read the library {path}: permission denied")

    engine = make_engine(path)
    try:
        fast_head = head_from_files()
        if fast_head is not None and path.is_file() and path.stat().st_size > 0:
            try:
                with engine.connect() as conn:
                    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
                if row is not None and row[0] == fast_head:
                    return Store(path=path, engine=engine)  # up to date: no Alembic import
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
            if not upgrade:
                raise StoreError(f"{path} needs a schema upgrade ({current} → {head})")
            migrate(engine, "head")
    except StoreError:
        engine.dispose()
        raise
    except (OperationalError, DatabaseError, sqlite3.Error) as e:
        engine.dispose()
        raise StoreError(f"cannot open the library {path}: {_orig(e)}") from None
    return Store(path=path, engine=engine)
