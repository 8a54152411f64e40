"""A broken model is not blamed on the photos (issue 13, defect 4).

A checkpoint that loads but fails on every photo — a bad ``resize`` field (the photos cannot be prepared
for it) or a bad ``n_heads`` (the decoder fails on every batch, and on every photo alone) — stops the run
with one ModelError line and records nothing against the photos; the good model then indexes them with no
``--retry-failed``. A failure that *is* recorded keeps the model version it happened under, and the plan
tries the file again when the version changes.
"""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.cli import app
from imgsearch.errors import ModelError
from imgsearch.model.captioner import read_checkpoint
from libtools import check_consistent, make_set, photos, rows, tiny_captioner

KW = dict(batch_size=4, workers=0, progress=False)
runner = CliRunner()
BROKEN = {
    "resize": (lambda ck: ck.update(resize="bogus"), "cannot prepare photos", "resize mode"),
    "n_heads": (lambda ck: ck["config"].update(n_heads=5), "fails on every photo", "RuntimeError"),
}


@pytest.fixture(scope="module")
def good():
    return tiny_captioner(0)


def broken_checkpoint(folder, good, which: str):
    """The tiny captioner saved as a checkpoint, then one field spoiled: it still loads."""
    path = good.save(folder / f"broken-{which}.pt")
    ck = read_checkpoint(path)
    BROKEN[which][0](ck)
    torch.save(ck, path)
    return path


def failed_rows(db):
    return rows(db, "SELECT path, error FROM photos WHERE error IS NOT NULL")


@pytest.mark.parametrize("which", sorted(BROKEN))
def test_a_checkpoint_failing_on_every_photo_stops_the_run_and_blames_no_photo(tmp_path, good, which):
    _, says, reason = BROKEN[which]
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, ["red_circle", "blue_square"], "a")
    pb = make_set(b, ["green_triangle", "stripes", "checker", "gradient", "sky", "marker"], "b")
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=good) as lib:            # an earlier run with the good model
        assert lib.index(a, **KW).added == 2
    before = photos(db)
    bad = broken_checkpoint(tmp_path, good, which)

    with Library(db, model=bad, device="cpu") as lib:
        with pytest.raises(ModelError) as ei:
            lib.index([a, b], **KW)
    msg = str(ei.value)
    assert says in msg and reason in msg and str(bad) in msg and "\n" not in msg
    assert failed_rows(db) == []                       # nothing recorded against the photos
    assert photos(db) == before                        # what earlier runs committed stays, as it was
    check_consistent(db)

    r = runner.invoke(app, ["index", str(b), "--db", str(db), "--model", str(bad), "--workers", "0",
                            "--batch-size", "4", "--device", "cpu"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgsearch: error: ") and says in lines[0], r.stderr
    assert "Traceback" not in r.output
    assert failed_rows(db) == [] and photos(db) == before

    with Library(db, captioner=good) as lib:           # back on the good model: no --retry-failed needed
        rep = lib.index([a, b], **KW)
    assert (rep.added, rep.failed) == (len(pb), 0)
    got = photos(db)
    assert all(got[str(p)][1] is None and got[str(p)][2] for p in pb)
    check_consistent(db)


def test_a_bad_file_is_still_recorded_under_the_version_it_failed_with(tmp_path, good):
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "blue_square", "sky"], "p")
    broken = pics / "broken.jpg"
    broken.write_bytes(b"not a photo at all")
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=good) as lib:
        rep = lib.index(pics, **KW)
    assert (rep.added, rep.failed) == (3, 1)           # the file's own fault: recorded, the run goes on
    pid, error, caption, version, at = photos(db)[str(broken)]
    assert error == "not an image" and caption is None and version == good.version

    with Library(db, captioner=good) as lib:           # same model, same file: not tried again
        rep = lib.index(pics, **KW)
    assert (rep.failed, rep.skipped_unchanged) == (0, 4)
    assert photos(db)[str(broken)][4] == at

    other = tiny_captioner(1)                          # another model version: tried again
    assert other.version != good.version
    with Library(db, captioner=other) as lib:
        rep = lib.index(pics, **KW)
    assert rep.failed == 1 and rep.errors == [(str(broken), "not an image")]
    assert photos(db)[str(broken)][:4] == (pid, "not an image", None, other.version)
    check_consistent(db)


def test_failures_recorded_without_a_version_are_retried_once(tmp_path, good):
    """Failures recorded before versions were kept (``model_version`` NULL, as the first release wrote
    them — e.g. every photo a broken checkpoint "failed") are tried again by the next run, then not."""
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "sky"], "p")
    (pics / "broken.jpg").write_bytes(b"not a photo at all")
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=good) as lib:
        assert lib.index(pics, **KW).failed == 1
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("UPDATE photos SET model_version = NULL WHERE error IS NOT NULL")
    with Library(db, captioner=good) as lib:
        assert lib.index(pics, **KW).failed == 1       # tried again, recorded under the current version
        assert photos(db)[str(pics / "broken.jpg")][3] == good.version
        assert lib.index(pics, **KW).failed == 0       # and then left alone
    check_consistent(db)
