"""The journal of a bulk ingest (imgsearch/store/journal.py): a rollback journal while the ingest writes, where it
has the library alone, WAL again at its end; the WAL throughout where the library is open elsewhere, with the very
same rows; connections opened meanwhile leave the journal as it is; a library left out of WAL mode (an ingest
killed before it could switch back) returns to it when next opened.

No Ray instance is started (the ingest only reads Parquet shards), but ``Library.ingest`` wants the extra installed:
skipped with the reason where it is not (pip install 'imgsearch[ray]').
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'imgsearch[ray]' to run the ingest tests")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (it comes with imgsearch[ray])")

from imgsearch import Library                       # noqa: E402
from imgsearch.cluster import bulk as cbulk       # noqa: E402
from imgsearch.cluster import run as cluster_run  # noqa: E402
from imgsearch.indexer.lock import index_lock     # noqa: E402
from imgsearch.store import journal               # noqa: E402
from libtools import ROOT, alarm, check_consistent, rows  # noqa: E402
from test_ray_ingest_bulk import dump, make_run   # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def _timeout():
    with alarm(120, "journal test"):
        yield


def mode_now(db: Path) -> str:
    """The library file's journal as a new plain connection finds it: 'wal', or 'delete' for any rollback journal."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
        return c.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_bulk_ingest_writes_through_a_rollback_journal_and_ends_in_wal(tmp_path):
    n, chunk = 600, 100
    run = make_run(tmp_path, n)
    db = tmp_path / "lib" / "library.db"
    seen = []
    with Library(db) as lib:
        rep = cluster_run.ingest(lib, run, chunk=chunk, progress=lambda done, total: seen.append(mode_now(db)))
        assert len(lib.caches.vector_index("caption")) == n
    assert rep.added == n
    # the first count comes before the writes begin; every chunk after it was written through the rollback journal
    assert seen == ["wal"] + ["delete"] * (n // chunk)
    assert mode_now(db) == "wal" and not Path(f"{db}-journal").exists()
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    check_consistent(db)


def test_with_the_library_open_elsewhere_the_ingest_keeps_the_wal_and_writes_the_same_rows(tmp_path):
    n, chunk = 500, 100
    run = make_run(tmp_path, n)
    alone = tmp_path / "alone" / "library.db"
    with Library(alone) as lib:
        cluster_run.ingest(lib, run, chunk=chunk)
    db = tmp_path / "shared" / "library.db"
    seen = []
    with Library(db) as lib:
        with contextlib.closing(sqlite3.connect(db)) as other:   # e.g. a server with the library open
            assert other.execute("SELECT count(*) FROM photos").fetchone() == (0,)
            rep = cluster_run.ingest(lib, run, chunk=chunk, progress=lambda done, total: seen.append(mode_now(db)))
    assert rep.added == n and set(seen) == {"wal"}
    assert dump(db) == dump(alone)


OPEN_DURING = """
import sys
from sqlalchemy import text
from imgsearch.store.db import open_store
store = open_store(sys.argv[1])
with store.session() as s:
    print(s.execute(text("SELECT count(*) FROM photos")).scalar())
store.close()
"""


def test_a_program_opening_the_library_during_the_ingest_reads_it_and_leaves_its_journal(tmp_path):
    n, chunk = 600, 100
    run = make_run(tmp_path, n)
    db = tmp_path / "lib" / "library.db"
    read = []

    def progress(done, total):
        if done == 2 * chunk:   # another process opens the library (its connection's on_connect) and counts
            got = subprocess.run([sys.executable, "-c", OPEN_DURING, str(db)], capture_output=True, text=True,
                                 cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
            assert got.returncode == 0, got.stderr
            read.append((int(got.stdout), mode_now(db)))

    with Library(db) as lib:
        rep = cluster_run.ingest(lib, run, chunk=chunk, progress=progress)
    assert rep.added == n
    assert read == [(2 * chunk, "delete")]   # what was committed, and still the rollback journal after it
    assert mode_now(db) == "wal"


def test_a_library_left_out_of_wal_returns_to_it_when_opened_but_not_during_an_index_run(tmp_path):
    db = tmp_path / "lib" / "library.db"
    Library(db).close()
    with contextlib.closing(sqlite3.connect(db)) as c:   # as a killed bulk ingest leaves it
        assert c.execute("PRAGMA journal_mode = PERSIST").fetchone() == ("persist",)
    with index_lock(db):                                  # an index run holds it: left as it is
        with Library(db) as lib:
            assert lib.store.revision() >= 0
        assert mode_now(db) == "delete"
    with Library(db) as lib:                              # no run: back to WAL on the first connection
        assert lib.store.revision() >= 0
        assert mode_now(db) == "wal"
        with lib.store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1   # NORMAL, as every WAL connection


def test_the_bulk_writer_under_the_index_lock_writes_through_a_rollback_journal(tmp_path):
    db = tmp_path / "lib" / "library.db"
    with Library(db) as lib:
        store = lib.store
        with index_lock(db):
            w = cbulk.BulkWriter(store)
            try:
                assert w.rollback and w.checkpointer is None
                assert w.cursor.execute("PRAGMA journal_mode").fetchone()[0] == journal.BULK_JOURNAL
                assert w.cursor.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL: safe against a power cut
                with store.engine.connect() as c:   # a session of this process meanwhile: the journal left alone
                    assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
                    assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2
                tx = w.begin()
                w.conn.exec_driver_sql("INSERT INTO meta(key, value) VALUES ('j1', '1')")
                w.commit(tx, lambda: None)
                w.wait()
                assert Path(f"{db}-journal").exists() and not Path(f"{db}-wal").exists()
            finally:
                w.close()
            assert mode_now(db) == "wal" and not Path(f"{db}-journal").exists()
            assert rows(db, "SELECT value FROM meta WHERE key = 'j1'") == [("1",)]
        # without the index lock (nothing keeps other connections from putting it back in WAL mode): the WAL
        w = cbulk.BulkWriter(store)
        try:
            assert not w.rollback and w.checkpointer is not None
            assert w.cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            w.close()


CUT_SHORT = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode = PERSIST")
c.execute("PRAGMA cache_size = 1")          # the pages spill into the file before the commit
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE meta SET value = 'cut' WHERE key = 'revision'")
for i in range(300):
    c.execute("INSERT INTO meta(key, value) VALUES (?, hex(randomblob(2000)))", (f"x{i}",))
os._exit(9)                                 # killed half-way through the commit
"""


def test_a_commit_cut_short_is_rolled_back_and_never_read_half_written(tmp_path, monkeypatch):
    """A crash during a rollback-journal commit leaves a hot journal: a read-only opening cannot roll it back and
    says so (it would read the half-written file through immutable=1); a writable one rolls it back, as SQLite
    always does, and sees the library as it was."""
    from imgsearch.errors import StoreError
    from imgsearch.store.db import open_store

    db = tmp_path / "lib" / "library.db"
    with Library(db) as lib:
        rev = lib.store.revision()
    got = subprocess.run([sys.executable, "-c", CUT_SHORT, str(db)], capture_output=True, text=True, timeout=60)
    assert got.returncode == 9, got.stderr
    assert journal.hot_journal(db)
    monkeypatch.setenv("IMGSEARCH_READ_ONLY", "1")
    with pytest.raises(StoreError, match="was interrupted"):
        open_store(db, read_only=True)
    monkeypatch.delenv("IMGSEARCH_READ_ONLY")
    store = open_store(db)
    try:
        assert store.revision() == rev
        assert rows(db, "SELECT count(*) FROM meta WHERE key LIKE 'x%'") == [(0,)]
    finally:
        store.close()
    assert not journal.hot_journal(db) and mode_now(db) == "wal"
