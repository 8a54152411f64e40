"""A run killed (SIGKILL) mid-way leaves a consistent library; the next run completes it without redoing work."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imgsearch import Library
from libtools import check_consistent, make_set, photos, rows, tiny_captioner

KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker"]

SCRIPT = textwrap.dedent("""
    import time
    import torch
    torch.set_num_threads(1)
    from imgsearch import Library
    from imgsearch.model.captioner import Captioner

    cap = Captioner.tiny(seed=0)
    real = cap.describe
    def slow(*a, **kw):          # give the test time to kill us between batches
        out = real(*a, **kw)
        time.sleep(0.5)
        return out
    cap.describe = slow
    with Library({db!r}, captioner=cap) as lib:
        lib.index([{folder!r}], batch_size=2, workers=0, progress=False)
    print("FINISHED", flush=True)
""")


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT count(*) FROM photos").fetchone()[0]
    except sqlite3.OperationalError:  # not created / migrated yet
        return 0


def _wait_for_a_batch(proc: subprocess.Popen, db: Path, timeout: float = 120) -> None:
    """Until the indexer in ``proc`` has committed its first batch (2 photos)."""
    deadline = time.monotonic() + timeout
    while _count(db) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the indexer never committed a batch"
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_run_is_completed_by_the_next(tmp_path):
    folder = tmp_path / "pics"
    make_set(folder, KINDS, "a")
    make_set(folder / "more", KINDS[:4], "b")  # 12 photos
    db = tmp_path / "library.db"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(db=str(db), folder=str(folder)))

    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_a_batch(proc, db)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        out = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert "FINISHED" not in out

    # the killed run left whole batches only
    done = photos(db)
    assert 2 <= len(done) < 12 and len(done) % 2 == 0, len(done)
    check_consistent(db)
    assert rows(db, "SELECT count(*) FROM index_runs WHERE finished_at IS NULL")[0][0] == 1

    with Library(db, captioner=tiny_captioner(0)) as lib:
        assert lib.status()["last_run_interrupted"]
        r = lib.index([folder], batch_size=4, workers=0, progress=False)
        assert r.added == 12 - len(done) and r.skipped_unchanged == len(done)
        assert (r.updated, r.moved, r.removed, r.failed) == (0, 0, 0, 0)
        after = photos(db)
        assert len(after) == 12
        assert rows(db, "SELECT count(DISTINCT path) FROM photos")[0][0] == 12
        for path, v in done.items():  # finished photos were not redone
            assert after[path] == v
        check_consistent(db)
        # the FAISS cache (never written by the killed run) matches the database
        assert set(int(i) for i in lib.caches.vector_index("caption").ids()) == {v[0] for v in after.values()}
        assert not lib.status()["last_run_interrupted"]


TERM_SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(1)
    from imgsearch.model.captioner import Captioner

    real = Captioner.describe
    def slow(self, *a, **kw):    # give the test time to stop us between batches
        out = real(self, *a, **kw)
        time.sleep(0.5)
        return out
    Captioner.describe = slow
    from imgsearch.cli import app
    app(["index", {folder!r}, "--db", {db!r}, "--model", {model!r}, "--batch-size", "2", "--workers", "0",
         "--quiet"])
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_sigterm_stops_an_index_run_like_ctrl_c(tmp_path):
    """`kill PID` (a service manager stopping us) unwinds like Ctrl-C: one line, exit 143, the run recorded as
    interrupted with whole batches only, and the next run completes it."""
    folder = tmp_path / "pics"
    make_set(folder, KINDS, "a")
    db = tmp_path / "library.db"
    model = tiny_captioner(0).save(tmp_path / "tiny.pt")
    script = tmp_path / "run.py"
    script.write_text(TERM_SCRIPT.format(db=str(db), folder=str(folder), model=str(model)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_a_batch(proc, db)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err.decode()
    assert "imgsearch: terminated (finished batches are saved" in err.decode()
    assert "Traceback" not in err.decode()
    done = photos(db)
    assert 2 <= len(done) < len(KINDS) and len(done) % 2 == 0
    check_consistent(db)
    assert rows(db, "SELECT count(*) FROM index_runs WHERE finished_at IS NULL")[0][0] == 1
    with Library(db, captioner=tiny_captioner(0)) as lib:
        r = lib.index([folder], batch_size=4, workers=0, progress=False)
        assert r.added == len(KINDS) - len(done) and len(photos(db)) == len(KINDS)
        check_consistent(db)
