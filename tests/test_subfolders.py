"""Issue 13, defect 3: a folder below an indexed root that had photos and now shows none (an unmounted drive
left as an empty mount point, a missing folder) keeps its photos; files deleted from a folder that still
shows photos go; a renamed folder is a move, not a kept folder plus copies."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.indexer.plan import keep_empty_folders
from libtools import check_consistent, make_set, photos, tiny_captioner

KW = dict(batch_size=4, workers=0, progress=False)


def faiss_ids(lib: Library) -> set[int]:
    return set(int(i) for i in lib.caches.vector_index("caption").ids())


@pytest.fixture(scope="module")
def cap():
    return tiny_captioner(0)


def test_keep_empty_folders_rule(tmp_path):
    root = tmp_path / "r"
    (root / "live" / "deep").mkdir(parents=True)
    (root / "mnt").mkdir()                                   # an empty mount point
    r, sep = str(root), os.sep
    on_disk = [f"{r}/live/a.jpg", f"{r}/live/deep/b.jpg"]
    gone = {f"{r}/live/old.jpg": 1,                          # deleted from a folder that still shows photos
            f"{r}/live/deep/old.jpg": 2,
            f"{r}/live/gone/x.jpg": 3,                       # a missing folder below a live one
            f"{r}/live/gone/deeper/y.jpg": 4,
            f"{r}/mnt/2020/z.jpg": 5, f"{r}/mnt/w.jpg": 6,   # everything that was on the drive
            f"{tmp_path}/elsewhere/v.jpg": 7}                # not under a root: not ours to keep
    gone = {p.replace("/", sep): i for p, i in gone.items()}
    kept = keep_empty_folders([r], [p.replace("/", sep) for p in on_disk], gone)
    assert kept == {os.path.join(r, "live", "gone"): {os.path.join(r, "live", "gone", "x.jpg"): 3,
                                                      os.path.join(r, "live", "gone", "deeper", "y.jpg"): 4},
                    os.path.join(r, "mnt"): {os.path.join(r, "mnt", "2020", "z.jpg"): 5,
                                             os.path.join(r, "mnt", "w.jpg"): 6}}
    assert sorted(gone.values()) == [1, 2, 7]
    # the root itself shows nothing: everything under it is kept, under the root
    gone = {os.path.join(r, "live", "a.jpg"): 1, os.path.join(r, "mnt", "w.jpg"): 2}
    assert keep_empty_folders([r], [], gone) == {r: {os.path.join(r, "live", "a.jpg"): 1,
                                                      os.path.join(r, "mnt", "w.jpg"): 2}} and gone == {}
    # a root that is a single photo is not a folder: its photo just goes
    f = root / "live" / "a.jpg"
    f.write_bytes(b"x")
    gone = {str(f): 1}
    assert keep_empty_folders([str(f)], [], gone) == {} and gone == {str(f): 1}


def test_unmounted_subfolder_and_missing_folder_keep_their_photos(tmp_path, cap):
    parent = tmp_path / "parent"
    live = make_set(parent / "live", ["red_circle", "blue_square"], "l")
    drive = make_set(parent / "mnt", ["stripes"], "m") + make_set(parent / "mnt" / "2020", ["checker", "sky"], "d")
    trip = make_set(parent / "trip" / "day1", ["gradient", "green_triangle"], "t")
    backup = tmp_path / "drive-contents"
    shutil.copytree(parent / "mnt", backup)                 # the files as they are on the drive (same mtimes)
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=cap) as lib:
        r = lib.index([parent], **KW)
        assert r.added == 7
        before = photos(db)
        ids = faiss_ids(lib)
        assert len(ids) == 7

        # "unmount": the mount point stays as an empty folder; a whole folder tree is gone; one photo of a
        # folder that still shows photos is deleted
        shutil.rmtree(parent / "mnt")
        (parent / "mnt").mkdir()
        shutil.rmtree(parent / "trip")
        live[1].unlink()
        r = lib.index([parent], **KW)
        assert r.removed == 1, r                             # only the photo deleted from parent/live
        assert r.kept == [(str(parent / "mnt"), 3), (str(parent / "trip"), 2)]
        assert r.to_dict()["kept"] == [{"folder": str(parent / "mnt"), "photos": 3},
                                       {"folder": str(parent / "trip"), "photos": 2}]
        assert not r.errors
        now = photos(db)
        assert set(now) == set(before) - {str(live[1])}
        assert faiss_ids(lib) == ids - {before[str(live[1])][0]}
        check_consistent(db)

        # "mount" again: the same files, nothing is re-described, the ids are the same
        shutil.rmtree(parent / "mnt")
        shutil.copytree(backup, parent / "mnt")
        r = lib.index([parent], **KW)
        assert (r.added, r.updated, r.removed, r.skipped_unchanged) == (0, 0, 0, 4) and r.kept == \
            [(str(parent / "trip"), 2)]
        assert photos(db) == now

        # asked for: the photos of the folder that is gone go
        r = lib.index([parent], prune_empty=True, **KW)
        assert r.removed == 2 and r.kept == []
        assert set(photos(db)) == {str(p) for p in [live[0], *drive]}
        assert faiss_ids(lib) == {v[0] for v in photos(db).values()}
        assert not any(str(p) in photos(db) for p in trip)


def test_renamed_folder_is_a_move_not_a_kept_folder(tmp_path, cap):
    parent = tmp_path / "parent"
    make_set(parent / "keep", ["red_circle"], "k")
    trip = make_set(parent / "trip", ["stripes", "checker"], "t")
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([parent], **KW)
        before = photos(db)
        os.rename(parent / "trip", parent / "trip-2024")
        r = lib.index([parent], **KW)
        assert (r.moved, r.added, r.removed, r.kept) == (2, 0, 0, [])
        after = photos(db)
        assert len(after) == 3
        for p in trip:
            assert after[str(parent / "trip-2024" / p.name)][0] == before[str(p)][0]


def test_cli_reports_the_kept_folder(tmp_path, cap, monkeypatch):
    from imgsearch.cli import app
    from imgsearch.model.captioner import Captioner

    monkeypatch.setattr(Captioner, "load", classmethod(lambda cls, path=None, device="auto": cap))
    parent = tmp_path / "parent"
    make_set(parent / "live", ["red_circle"], "l")
    make_set(parent / "mnt", ["stripes", "checker"], "m")
    db = tmp_path / "lib"
    runner = CliRunner()
    args = ["index", str(parent), "--db", str(db), "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 0
    for f in (parent / "mnt").iterdir():
        f.unlink()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert f"kept: 2 photos under {parent / 'mnt'} (folder empty" in text
    assert f"imgsearch prune {parent / 'mnt'}` removes them" in text
    res = runner.invoke(app, [*args, "--json"])
    assert json.loads(res.stdout)["kept"] == [{"folder": str(parent / "mnt"), "photos": 2}]
