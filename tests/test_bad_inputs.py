"""Every kind of broken file is recorded with its reason; the run goes on; failures are retried only when changed."""
from __future__ import annotations

import os
import time

import pytest

from imgsearch import Library
from libtools import check_consistent, make_set, photos, tiny_captioner
from photos import make_bad_files, make_photo


@pytest.fixture(scope="module")
def cap():
    return tiny_captioner(0)


def test_bad_files_are_recorded_and_skipped(tmp_path, cap):
    folder = tmp_path / "pics"
    expected = make_bad_files(folder)
    good = make_set(folder, ["red_circle", "sky", "checker"], "good")
    (folder / "notes.txt").write_text("not a photo extension: never scanned")
    os.mkfifo(folder / "fifo.jpg")  # not a regular file: skipped by the scan, must not hang
    db = tmp_path / "library.db"

    with Library(db, captioner=cap) as lib:
        # worker processes: errors must cross the process boundary as records, not exceptions
        r = lib.index([folder], batch_size=4, workers=2, progress=False)
        assert r.added == len(good)
        assert r.failed == len(expected)
        got = dict(r.errors)
        for name, reason in expected.items():
            assert reason in got[str(folder / name)], (name, got[str(folder / name)])
        assert dict(lib.errors()) == got
        st = lib.status()
        assert (st["photos"], st["failed"]) == (len(good), len(expected))
        check_consistent(db)

        # unchanged failures are not retried ...
        r = lib.index([folder], batch_size=4, workers=0, progress=False)
        assert (r.failed, r.added, r.updated) == (0, 0, 0)
        assert r.skipped_unchanged == len(good) + len(expected)
        # ... unless asked to
        r = lib.index([folder], batch_size=4, workers=0, progress=False, retry_failed=True)
        assert r.failed == len(expected) and r.updated == 0

        # a failed file that changes is retried; fixed → error cleared, same row
        fixed = folder / "truncated.jpg"
        old_id = photos(db)[str(fixed)][0]
        time.sleep(0.01)
        make_photo(fixed, kind="stripes", size=(320, 240))
        # a good file that becomes broken → error recorded, old captions dropped
        broken = good[0]
        broken.write_bytes(b"garbage" * 10)
        r = lib.index([folder], batch_size=4, workers=0, progress=False)
        assert (r.updated, r.failed) == (1, 1)
        after = photos(db)
        assert after[str(fixed)][0] == old_id and after[str(fixed)][1] is None and after[str(fixed)][2] is not None
        assert after[str(broken)][1] == "not an image"
        check_consistent(db)
        assert str(broken) in dict(lib.errors()) and str(fixed) not in dict(lib.errors())

        # a broken file that is deleted disappears from the error list
        (folder / "empty.jpg").unlink()
        r = lib.index([folder], batch_size=4, workers=0, progress=False)
        assert r.removed == 1 and str(folder / "empty.jpg") not in dict(lib.errors())


def test_missing_root_is_a_user_error(tmp_path, cap):
    from imgsearch.library import LibraryError

    with Library(tmp_path / "library.db", captioner=cap) as lib:
        with pytest.raises(LibraryError, match="no such folder"):
            lib.index([tmp_path / "nope"], progress=False)
        assert lib.status()["photos"] == 0


def test_decoder_crash_is_isolated(tmp_path, cap, monkeypatch):
    """A decoder that segfaults in a worker costs that one file, not the run."""
    import signal

    from imgsearch.indexer import loader

    folder = tmp_path / "pics"
    good = make_set(folder, ["red_circle", "sky", "checker", "stripes"], "good")
    crash = make_set(folder, ["blue_square"], "crash")[0]
    real = loader.decode_one

    def flaky(path, *a, **kw):
        if os.path.basename(path).startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, *a, **kw)

    monkeypatch.setattr(loader, "decode_one", flaky)  # workers are forked: they see the patch
    with Library(tmp_path / "library.db", captioner=cap) as lib:
        r = lib.index([folder], batch_size=2, workers=2, progress=False)
        assert r.added == len(good) and r.failed == 1
        assert dict(r.errors)[str(crash)].startswith("decoder crashed")
        check_consistent(tmp_path / "library.db")


def test_hung_decoder_times_out(tmp_path, monkeypatch):
    from imgsearch.indexer import loader

    hang = make_set(tmp_path, ["marker"], "hang")[0]
    monkeypatch.setattr(loader, "decode_one", lambda *a, **kw: time.sleep(60))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as ei:
        list(loader.batches([str(hang)], 224, "squash", 1, 1, timeout=1))
    assert loader.crash_reason(ei.value) == "decoder hung (timed out)"
    assert time.monotonic() - t0 < 5  # the hung worker is killed, not waited for
