"""A library's journal: SQLite's write-ahead log (WAL), except while a bulk ingest writes it.

A library is in WAL mode: readers never wait for the writer, and a commit appends its pages to the ``-wal``
file, from which a checkpoint copies them into the database file later. A bulk ingest writes ~24 KB a photo
(the vectors, the cells), so in WAL mode every page goes through the disk twice, each with its own system calls
(the WAL frame; the checkpoint's read and write): at 1M rows ~6M pages, and the commit and checkpoint threads
took about half of the 2 cores' time (bench/README.md, "Ingest rate", session 16). With a rollback journal, new
pages are written once, in place: pages added past the end of the file need no journal (only the few pages a
transaction changes, index and table pages, are copied into ``-journal`` first).

So a bulk ingest (cluster/bulk.BulkWriter) switches the library to a rollback journal (``PERSIST``) for its
writes, and back to WAL at its end (``hold_for_bulk``, ``back_to_wal``), under these rules:

* only while it holds the library's index lock (indexer/lock.py), and only when no other connection has the
  library open (SQLite leaves WAL mode only then): with a server or another program reading the library, the
  ingest stays in WAL mode, as before — slower, never wrong. This process's own idle connections are closed
  first (``Store.close_idle``).
* with ``synchronous = FULL``: a rollback journal is safe against a power cut only so (WAL needs NORMAL only).
* a connection opened meanwhile (a query in another process, this process's own sessions) finds the library out
  of WAL mode with the index lock held, and leaves it so (``on_connect``): it reads and writes through the
  rollback journal, waiting (``busy_timeout``) while a commit writes. Any connection that finds the library out
  of WAL mode with no index run — a bulk ingest killed before it could switch back — returns it to WAL (without
  waiting: where another connection prevents it, a later one does it). A crash half-way through a commit leaves
  a hot journal, which SQLite rolls back on the next read, as always: whole transactions only.

What readers notice during such an ingest: a query waits while a commit writes (~60 MB in a fraction of a second
on a local disk) instead of never waiting.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

BULK_JOURNAL = "persist"   # the journal file is kept between commits (its header zeroed) instead of made anew


def on_connect(cur, db_path: str | Path, busy_timeout_ms: int) -> str:
    """A new writable connection's journal settings: the library's mode as found, returned to WAL where it is out of
    it with no index run under way (see the module's docstring); ``synchronous`` to suit the mode. Returns the mode."""
    mode = str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode != "wal" and not _index_running(db_path):
        mode = _set_mode(cur, "wal", 0, busy_timeout_ms) or mode
    cur.execute("PRAGMA synchronous = NORMAL" if mode == "wal" else "PRAGMA synchronous = FULL")
    return mode


def hold_for_bulk(store, cur, busy_timeout_ms: int) -> bool:
    """Switch the library to the rollback journal for a bulk ingest on the connection of ``cur`` (outside any
    transaction); True where it is now so. False (the library stays in WAL mode) where no index run holds the
    library's lock (the ingest's own: without it, nothing keeps other connections from putting the library back in
    WAL mode) or another connection has it open."""
    if not _index_running(store.path):
        return False
    store.close_idle()   # this process's idle connections: SQLite leaves WAL mode only with none open
    got = _set_mode(cur, BULK_JOURNAL, 0, busy_timeout_ms)
    if got != BULK_JOURNAL:
        log.info("the library is open elsewhere: the ingest writes through the WAL")
        return False
    cur.execute("PRAGMA synchronous = FULL")
    return True


def back_to_wal(store, cur, busy_timeout_ms: int) -> bool:
    """The library back in WAL mode after a bulk ingest (waiting up to ``busy_timeout_ms`` for readers), and this
    process's idle connections made meanwhile closed (their settings were a rollback journal's; the bulk writer
    closes the connection of ``cur`` next); False where it could not be switched now: the next connection opened
    after the index run does it (on_connect)."""
    got = _set_mode(cur, "wal", busy_timeout_ms, busy_timeout_ms)
    if got != "wal":
        log.warning("the library stays in rollback-journal mode until it is next opened (readers kept it busy)")
        return False
    store.close_idle()
    return True


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")   # the header of a rollback journal that still holds a commit


def hot_journal(db_path: str | Path) -> bool:
    """Whether ``db_path``'s rollback journal holds a commit that was cut short (a crash while it wrote): SQLite
    rolls it back on the next read with write access; a read-only connection cannot (``mode=ro`` refuses the
    library, ``immutable=1`` would read the half-written file). A journal of a commit that completed has its
    header zeroed (PERSIST) or is gone."""
    try:
        with open(f"{db_path}-journal", "rb") as f:
            return f.read(8) == JOURNAL_MAGIC
    except OSError:
        return False


def _set_mode(cur, mode: str, wait_ms: int, busy_timeout_ms: int) -> str | None:
    """``PRAGMA journal_mode = mode``, waiting at most ``wait_ms`` for other connections; the mode then in force,
    or None where the library was busy."""
    cur.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        return str(cur.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]).lower()
    except sqlite3.OperationalError as e:   # "database is locked": another connection has it open or busy
        log.debug("journal_mode = %s: %s", mode, e)
        return None
    finally:
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def _index_running(db_path: str | Path) -> bool:
    from imgsearch.indexer.lock import index_running

    return index_running(Path(db_path))
