"""Issue 13, defect 7: the smaller faults the fault test found, each reproduced for real.

* ``kill -9`` during a run: the DataLoader workers must not keep the index lock (a new run starts at once);
* a killed cache save leaves ``*.tmp`` files: removed on the next open or save (a live writer's are kept);
* disk full / a damaged page: one line, exit 1, no traceback (CLI) and a 503 with one sentence (serve);
* a 0-byte ``library.db`` is refused by searches, and replaced by ``index`` with a warning, never silently (a new
  library is built atomically, so imgsearch never leaves one);
* ``--json`` output is valid UTF-8 even for file names that are not;
* ``--db some/folder/`` means the folder;
* two processes upgrading an old-schema library at once both succeed.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgsearch import Library, paths
from imgsearch.cli import app
from imgsearch.errors import StoreError
from imgsearch.indexer.lock import index_lock
from libtools import KINDS, ROOT, make_set, tiny_captioner
from photos import make_photo

INDEX_KW = dict(batch_size=8, workers=0, progress=False)
TESTS = Path(__file__).resolve().parent
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, *words):
    """The CLI failed the way a user should see it: exit 1, one line, no traceback."""
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgsearch: error: "), r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def small_library(tmp_path, n_kinds=4) -> tuple[Path, Path]:
    pics = tmp_path / "pics"
    make_set(pics, KINDS[:n_kinds], "p")
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
    return pics, db


# ---------------------------------------------------------------------------- the lock after kill -9

KILLED_RUN = """
import sys, time
sys.path.insert(0, sys.argv[3])
from libtools import tiny_captioner
from imgsearch import Library

def progress(done, total):
    if done:
        print("batch", flush=True)
        time.sleep(60)          # the parent stays busy while its workers wait with decoded batches

with Library(sys.argv[2], captioner=tiny_captioner(0)) as lib:
    lib.index([sys.argv[1]], batch_size=2, workers=2, progress=progress)
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork-started DataLoader workers: Linux")
def test_killed_run_frees_the_lock_at_once(tmp_path):
    pics = tmp_path / "pics"
    for i in range(24):
        make_photo(pics / f"p{i:02d}.jpg", kind=KINDS[i % len(KINDS)], size=(96, 72))
    db = tmp_path / "lib" / "library.db"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(pics), str(db), str(TESTS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "batch", proc.stderr.read() if proc.poll() is not None else line
        workers = _children(proc.pid)
        assert workers, "the run has no worker processes"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        t0 = time.monotonic()
        with index_lock(db):            # at once, not ~5 s later when the orphans notice
            pass
        assert time.monotonic() - t0 < 1.0
        deadline = time.monotonic() + 3.0
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "orphaned workers kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    with Library(db, captioner=tiny_captioner(0)) as lib:   # and the next run completes the library
        rep = lib.index([pics], **INDEX_KW)
        assert lib.status()["photos"] == 24 and rep.failed == 0


def test_forked_child_does_not_hold_the_lock(tmp_path):
    db = tmp_path / "library.db"
    r, w = os.pipe()
    with index_lock(db):
        pid = os.fork()
        if pid == 0:   # the child: as a DataLoader worker, it keeps running after the fork
            os.close(r)
            os.write(w, b"x")
            time.sleep(5)
            os._exit(0)
        os.close(w)
        os.read(r, 1)
    os.close(r)
    try:
        with index_lock(db):   # the parent let go: free although the child still runs
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# ---------------------------------------------------------------------------- stale temporary files

def _aged(p: Path, seconds: float = 60) -> Path:
    t = time.time() - seconds
    os.utime(p, (t, t))
    return p


def test_stale_temp_files_are_removed_on_open_and_save(tmp_path):
    import fcntl

    pics, db = small_library(tmp_path, 2)
    folder = db.parent
    dead = _aged(_touch(folder / "library.db.captions.faiss.k1ll3d.tmp"))   # a FAISS save killed at its start
    half = folder / "library.db.images.faiss.h4lf.tmp"               # ... and one killed half-way
    half.write_bytes(b"IMGSVEC1" + b"\0" * 100)
    _aged(half)
    fresh = _aged(_touch(folder / "library.db.labels.faiss.l1ve.tmp"))   # a live writer's: locked
    live = open(fresh, "rb")
    fcntl.flock(live.fileno(), fcntl.LOCK_EX)
    other = _aged(_touch(folder / "notes.tmp"))                      # not the library's
    try:
        with Library(db, captioner=tiny_captioner(0)):
            pass
        assert not dead.exists() and not half.exists()
        assert fresh.exists() and other.exists()
    finally:
        live.close()

    # a save removes its own leftovers too (a library that stays open)
    from imgsearch.search import vector_file

    left = _aged(_touch(folder / "library.db.captions.faiss.ag41n.tmp"))
    with Library(db, captioner=tiny_captioner(0)) as lib:
        _aged(_touch(left))          # left after the library was opened
        lib.caches.vectors["caption"].rebuild()
        assert not left.exists()
        assert vector_file.read_header(folder / "library.db.captions.faiss")["count"] == 2
    assert sorted(p.name for p in folder.glob("*.tmp")) == ["notes.tmp"]   # l1ve's writer is gone now


def test_a_temp_file_too_fresh_to_remove_at_open_goes_at_the_end_of_the_index_run(tmp_path):
    """A save killed just before the next run opens the library (so its temp file is younger than
    STALE_AFTER_S then, and may be a live writer's): the run removes it when it ends, whatever it wrote."""
    pics, db = small_library(tmp_path, 2)
    left = _touch(db.parent / "library.db.visual.faiss.j5tk1ld.tmp")
    _aged(left, -3600)                             # as fresh as can be when the library opens
    with Library(db, captioner=tiny_captioner(0)) as lib:
        assert left.exists()                       # fresh at open: kept
        _aged(left)                                # ... the run takes its time
        lib.index([pics], workers=0, progress=False)
        assert not left.exists()


def _touch(p: Path) -> Path:
    p.write_bytes(b"")
    return p


# ---------------------------------------------------------------------------- disk full, damaged page

def test_disk_full_is_one_line_and_the_run_ends_cleanly(tmp_path, tiny_model, monkeypatch):
    """SQLite's "database or disk is full", for real: the database may not grow past a page limit."""
    from sqlalchemy import event

    from imgsearch.store import db as store_db

    pics, db = small_library(tmp_path, 2)
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    for i in range(40):
        make_photo(pics / "more" / f"m{i:02d}.jpg", kind=KINDS[i % len(KINDS)], size=(96, 72))
    make_engine = store_db.make_engine

    def full_engine(path, **kw):
        engine = make_engine(path, **kw)

        @event.listens_for(engine, "connect")
        def _limit(dbapi_conn, _record):
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 2}")

        return engine

    monkeypatch.setattr(store_db, "make_engine", full_engine)
    r = run("index", pics, "--db", db, "--workers", 0, "--batch-size", 4)
    one_line_error(r, "no space left")
    monkeypatch.setattr(store_db, "make_engine", make_engine)
    with index_lock(db):   # the run let go of its lock
        pass
    r = run("status", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["photos"] >= 2


def test_disk_full_on_a_small_tmpfs(tmp_path, tiny_model):
    """The same on a real full file system, where the machine lets us mount one (root)."""
    pics = tmp_path / "pics"
    for i in range(60):
        make_photo(pics / f"p{i:02d}.jpg", kind=KINDS[i % len(KINDS)], size=(96, 72))
    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(small)], capture_output=True,
                       timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        db = small / "library.db"
        r = run("index", pics, "--db", db, "--workers", 0, "--batch-size", 4)
        assert r.exit_code == 1, r.output
        one_line_error(r, "no space left")
        with index_lock(db):
            pass
        with Library(db, create=False) as lib:
            assert lib.status()["photos"] < 60
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, timeout=30)


def _damage_photos_table(db: Path) -> None:
    with sqlite3.connect(db) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'photos'").fetchone()[0]
        size = c.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * size)


def test_damaged_page_is_one_line_in_the_cli_and_503_in_serve(tmp_path, tiny_model):
    pics, db = small_library(tmp_path, 3)
    _damage_photos_table(db)
    for args in (("status",), ("query", "a red circle", "--mode", "dense")):
        r = run(*args, "--db", db)
        one_line_error(r, "damaged", "malformed")

    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    with TestClient(create_app(db), base_url="http://127.0.0.1") as client:
        res = client.get("/api/search", params={"q": "a red circle", "mode": "dense"})
        assert res.status_code == 503
        assert "damaged" in res.json()["detail"]


# ---------------------------------------------------------------------------- a 0-byte library.db

def test_empty_library_file_is_refused_by_searches_and_replaced_by_index(tmp_path, tiny_model, caplog):
    pics = tmp_path / "pics"
    make_set(pics, KINDS[:2], "p")
    db = tmp_path / "lib" / "library.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    with pytest.raises(StoreError, match=r"empty \(0 bytes\)"):
        Library(db, captioner=tiny_captioner(0), create=False)
    one_line_error(run("status", "--db", db), "empty (0 bytes)")
    one_line_error(run("query", "a red circle", "--db", db), "empty (0 bytes)")
    assert db.stat().st_size == 0 and sorted(p.name for p in db.parent.iterdir()) == ["library.db"]

    with caplog.at_level("WARNING", logger="imgsearch.store.db"):   # index: a new library, and it says so
        r = run("index", pics, "--db", db, "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["added"] == 2
    assert any("was empty (0 bytes)" in m and "started a new library" in m for m in caplog.messages)


def test_a_failed_creation_leaves_no_library_file(tmp_path, monkeypatch):
    from imgsearch.store import db as store_db

    def broken(engine, target="head"):
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE half_made (x)")   # written, then the process "dies"
            conn.commit()
        raise KeyboardInterrupt

    monkeypatch.setattr(store_db, "migrate", broken)
    db = tmp_path / "lib" / "library.db"
    with pytest.raises(KeyboardInterrupt):
        Library(db, captioner=tiny_captioner(0))
    assert list(db.parent.iterdir()) == []              # no 0-byte or half-made library.db, no temp
    monkeypatch.undo()
    with Library(db, captioner=tiny_captioner(0)) as lib:   # and a new one is made normally
        assert lib.status()["photos"] == 0


# ---------------------------------------------------------------------------- --json and odd file names

def test_json_output_is_utf8_for_undecodable_names(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    latin1 = os.fsencode(pics) + b"/caf\xe9-photo.jpg"            # a Latin-1 name: not UTF-8
    broken = os.fsencode(pics) + b"/broken-\xff\xfe.jpg"
    make_photo(os.fsdecode(latin1), kind="red_circle", size=(96, 72))
    Path(os.fsdecode(broken)).write_bytes(b"not an image")
    make_set(pics, KINDS[:1], "ok")
    db = tmp_path / "lib" / "library.db"

    r = run("index", pics, "--db", db, "--workers", 0, "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    rep = json.loads(r.stdout_bytes.decode("utf-8"))               # strict: valid UTF-8
    assert rep["added"] == 1
    # the escapes round-trip to the names' bytes (the scanner reports such names, it cannot store them)
    assert sorted(os.fsencode(e["path"]) for e in rep["errors"]) == sorted([latin1, broken])


# ---------------------------------------------------------------------------- --db some/folder/

def test_db_path_with_a_trailing_slash_is_a_folder(tmp_path, tiny_model, monkeypatch):
    pics = tmp_path / "pics"
    make_set(pics, KINDS[:2], "p")
    monkeypatch.chdir(tmp_path)
    r = run("index", pics, "--db", "newlib/", "--workers", 0, "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "newlib").is_dir() and (tmp_path / "newlib" / "library.db").is_file()
    assert not list(tmp_path.glob("newlib.*"))                     # no sidecars beside the folder
    r = run("status", "--db", "newlib", "--json")                  # the folder, now that it exists
    assert r.exit_code == 0 and json.loads(r.stdout)["photos"] == 2

    assert paths.resolve_db_path("x/y/") == (tmp_path / "x" / "y" / "library.db")
    assert paths.resolve_db_path("x/y/.") == (tmp_path / "x" / "y" / "library.db")
    assert paths.resolve_db_path("x/y.db") == (tmp_path / "x" / "y.db")
    monkeypatch.setenv("IMGSEARCH_DB", "envlib/")
    assert paths.default_db_path() == tmp_path / "envlib" / "library.db"


# ---------------------------------------------------------------------------- concurrent schema upgrades

OPEN_AT = """
import sys, time
from imgsearch.store.db import open_store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
s = open_store(sys.argv[1], create=False)
print(s.revision())
s.close()
"""


def test_two_processes_upgrade_an_old_library_at_once(tmp_path):
    from imgsearch.store.db import current_revision, head_revision, make_engine, migrate

    for attempt in range(2):   # the race is real: try it twice, each time with a fresh old library
        db = tmp_path / f"old{attempt}.db"
        engine = make_engine(db)
        migrate(engine, "0001")
        engine.dispose()
        start = time.time() + 4.0
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(db), str(start)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-2000:]
        engine = make_engine(db)
        assert current_revision(engine) == head_revision()
        engine.dispose()
