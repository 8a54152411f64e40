"""indexer/plan.py: `imgsearch index *.jpg`, thousands of single-file roots in one run."""
from __future__ import annotations

from PIL import Image

from imgsearch import Library
from libtools import check_consistent, photos, tiny_captioner


def test_index_many_single_file_roots(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    files = []
    for i in range(360):                      # 3 SQL terms per root: 1,080 > SQLite's expression depth of 1,000
        p = folder / f"img_{i:04d}.png"
        Image.new("RGB", (32, 32), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)).save(p)
        files.append(p)
    db = tmp_path / "lib.db"
    with Library(db, captioner=tiny_captioner()) as lib:
        first = lib.index(files, batch_size=64, progress=False)
        assert (first.added, first.failed) == (360, 0)
        files[0].unlink()
        again = lib.index(files[1:], batch_size=64, progress=False)
        assert (again.skipped_unchanged, again.added, again.removed) == (359, 0, 0)
        whole = lib.index([folder], batch_size=64, progress=False)   # the folder as root: the gone file leaves
        assert (whole.skipped_unchanged, whole.added, whole.removed) == (359, 0, 1)
    assert len(photos(db)) == 359
    check_consistent(db)
