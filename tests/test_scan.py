"""imgsearch.indexer.scan: folder walking, dedupe, symlinks, errors, diff, content hash."""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from imgsearch.indexer import scan as scan_mod
from imgsearch.indexer.scan import (
    IMAGE_EXTENSIONS,
    FileEntry,
    RootNotFoundError,
    ScanDiff,
    content_hash,
    diff,
    is_image_name,
    scan,
)
from photos import IS_ROOT, make_photo

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks")


def paths(entries) -> list[str]:
    return [e.path for e in entries]


def touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    make_photo(root / "a.jpg", "red_circle", (64, 48))
    make_photo(root / "B.JPG", "blue_square", (64, 48))
    make_photo(root / "c.Png", "sky", (64, 48))
    make_photo(root / "sub" / "d.webp", "stripes", (64, 48))
    make_photo(root / "sub" / "deeper" / "e.tiff", "checker", (64, 48))
    touch(root / "notes.txt")
    touch(root / "sub" / "raw.cr2")
    touch(root / "noext")
    touch(root / ".hidden.jpg")
    touch(root / ".thumbs" / "t.jpg")
    touch(root / "sub" / ".git" / "x.png")
    touch(root / "@eaDir" / "SYNOPHOTO_THUMB_XL.jpg")
    touch(root / "empty.jpg", b"")  # listed: the decoder reports it
    return root


def test_extensions():
    assert IMAGE_EXTENSIONS == {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"}
    for name in ("a.jpg", "A.JPG", "x.Png", "y.HEIC", "z.tiff", "w.jpeg.JPEG"):
        assert is_image_name(name), name
    for name in ("a.txt", "jpg", ".jpg", "a.jpg.txt", "a.cr2", "noext"):
        assert not is_image_name(name), name


def test_scan_tree(tree):
    found = list(scan([tree]))
    root = os.path.realpath(tree)
    rel = sorted(os.path.relpath(p, root) for p in paths(found))
    assert rel == sorted(["a.jpg", "B.JPG", "c.Png", "empty.jpg", "sub/d.webp", "sub/deeper/e.tiff"])
    for e in found:
        assert isinstance(e, FileEntry) and os.path.isabs(e.path)
        st = os.stat(e.path)
        assert (e.size, e.mtime_ns) == (st.st_size, st.st_mtime_ns)
    # deterministic order: sorted names, files of a folder before its sub-folders
    assert paths(found) == paths(scan([str(tree)]))
    assert os.path.basename(paths(found)[0]) == "B.JPG"


def test_file_entry_is_frozen(tree):
    e = next(iter(scan([tree])))
    with pytest.raises(Exception):
        e.size = 1  # type: ignore[misc]


def test_missing_root_raises_up_front(tmp_path):
    missing = tmp_path / "gone" / "photos"
    with pytest.raises(RootNotFoundError) as ei:
        scan([tmp_path, missing])  # raised at call time, before iterating
    assert isinstance(ei.value, FileNotFoundError)
    assert str(missing) in str(ei.value)


def test_single_file_root(tmp_path):
    p = make_photo(tmp_path / "one.jpg")
    odd = touch(tmp_path / "no_extension", p.read_bytes())
    assert paths(scan([p])) == [os.path.join(os.path.realpath(tmp_path), "one.jpg")]
    assert len(list(scan([odd]))) == 1  # explicitly named: yielded whatever its name
    assert len(list(scan([p, tmp_path]))) == 1  # the same file twice → once


def test_overlapping_roots(tree):
    a = paths(scan([tree / "sub", tree]))
    assert len(a) == len(set(a)) == 6


def test_unicode_names(tmp_path):
    p = make_photo(tmp_path / "été" / "café 照片 🐶.jpg")
    assert paths(scan([tmp_path])) == [os.path.join(os.path.realpath(tmp_path), "été", "café 照片 🐶.jpg")]


def test_non_regular_files_skipped(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs")
    os.mkfifo(tmp_path / "pipe.jpg")
    make_photo(tmp_path / "real.jpg")
    assert [os.path.basename(p) for p in paths(scan([tmp_path]))] == ["real.jpg"]


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs a filesystem that allows non-UTF-8 names")
def test_undecodable_name_reported(tmp_path):
    make_photo(tmp_path / "ok.jpg")
    try:
        with open(os.fsencode(tmp_path) + b"/bad\xff.jpg", "wb") as f:
            f.write(b"x")
    except OSError:
        pytest.skip("filesystem refuses non-UTF-8 names")
    errors = []
    got = paths(scan([tmp_path], on_error=lambda p, r: errors.append((p, r))))
    assert [os.path.basename(p) for p in got] == ["ok.jpg"]
    assert len(errors) == 1 and "UTF-8" in errors[0][1]


# ---------------------------------------------------------------- symlinks


@needs_symlinks
def test_symlink_loop_terminates(tmp_path):
    root = tmp_path / "r"
    make_photo(root / "a" / "x.jpg")
    os.symlink("..", root / "a" / "up")          # a/up → r
    os.symlink(root / "a", root / "a" / "self")  # a/self → a
    os.symlink("loop2", root / "loop1")          # link pointing at a link pointing back
    os.symlink("loop1", root / "loop2")
    got = paths(scan([root]))
    assert got == [os.path.join(os.path.realpath(root), "a", "x.jpg")]


@needs_symlinks
def test_same_file_via_two_symlinked_dirs_counted_once(tmp_path):
    outside = tmp_path / "outside"
    make_photo(outside / "p.jpg")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link1")
    os.symlink(outside, root / "link2")
    got = paths(scan([root]))
    assert got == [os.path.join(os.path.realpath(root), "link1", "p.jpg")]  # link's path, not the target's


@needs_symlinks
def test_real_path_preferred_over_symlinked_dir(tmp_path):
    root = tmp_path / "root"
    make_photo(root / "real" / "p.jpg")
    os.symlink(root / "real", root / "alias")  # sorts before "real"
    assert paths(scan([root])) == [os.path.join(os.path.realpath(root), "real", "p.jpg")]


@needs_symlinks
def test_symlinked_file_and_broken_link(tmp_path):
    target = make_photo(tmp_path / "store" / "blob.jpg")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(target, root / "Link.JPG")
    os.symlink(tmp_path / "nowhere.jpg", root / "broken.jpg")
    errors = []
    got = list(scan([root], on_error=lambda p, r: errors.append((p, r))))
    assert paths(got) == [os.path.join(os.path.realpath(root), "Link.JPG")]
    assert got[0].size == target.stat().st_size
    assert errors == []


@needs_symlinks
def test_symlinked_root_is_resolved(tmp_path):
    real = tmp_path / "real"
    make_photo(real / "p.jpg")
    os.symlink(real, tmp_path / "alias")
    assert paths(scan([tmp_path / "alias"])) == [os.path.join(os.path.realpath(real), "p.jpg")]


def test_hard_links_counted_once(tmp_path):
    p = make_photo(tmp_path / "a.jpg")
    try:
        os.link(p, tmp_path / "b.jpg")
    except OSError:
        pytest.skip("no hard links here")
    assert [os.path.basename(x) for x in paths(scan([tmp_path]))] == ["a.jpg"]


# ---------------------------------------------------------------- errors and races


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop root from listing a folder")
def test_unreadable_folder_reported_and_skipped(tmp_path):
    make_photo(tmp_path / "ok" / "a.jpg")
    locked = tmp_path / "locked"
    make_photo(locked / "b.jpg")
    os.chmod(locked, 0)
    try:
        errors = []
        got = paths(scan([tmp_path], on_error=lambda p, r: errors.append((p, r))))
    finally:
        os.chmod(locked, 0o755)
    assert [os.path.basename(p) for p in got] == ["a.jpg"]
    assert errors == [(os.path.join(os.path.realpath(tmp_path), "locked"), "permission denied")]


def test_unreadable_folder_simulated(tmp_path, monkeypatch):
    """Same as above but works as root: scandir is made to fail for one folder."""
    make_photo(tmp_path / "ok" / "a.jpg")
    make_photo(tmp_path / "locked" / "b.jpg")
    locked = os.path.join(os.path.realpath(tmp_path), "locked")
    real_scandir = os.scandir

    def fake_scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scan_mod.os, "scandir", fake_scandir)
    errors = []
    got = paths(scan([tmp_path], on_error=lambda p, r: errors.append((p, r))))
    assert [os.path.basename(p) for p in got] == ["a.jpg"]
    assert errors == [(locked, "permission denied")]

    # without on_error: logged, not raised
    assert len(list(scan([tmp_path]))) == 1


def test_files_and_folders_vanishing_mid_scan(tmp_path):
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        make_photo(tmp_path / n, size=(32, 32))
    make_photo(tmp_path / "sub" / "d.jpg", size=(32, 32))
    it = scan([tmp_path], on_error=lambda p, r: pytest.fail(f"unexpected error {p}: {r}"))
    first = next(it)  # the folder has been listed now
    assert first.path.endswith("a.jpg")
    os.unlink(tmp_path / "b.jpg")
    os.unlink(tmp_path / "sub" / "d.jpg")
    os.rmdir(tmp_path / "sub")
    rest = [os.path.basename(p) for p in paths(it)]
    assert rest == ["c.jpg"]


def test_scan_is_fast(tmp_path):
    n_dirs, per_dir = 50, 100  # 5000 files
    for d in range(n_dirs):
        sub = tmp_path / f"d{d:03}"
        sub.mkdir()
        for i in range(per_dir):
            (sub / f"img{i:04}.jpg").write_bytes(b"")
            if i % 10 == 0:
                (sub / f"note{i}.txt").write_bytes(b"")
    t = time.perf_counter()
    n = sum(1 for _ in scan([tmp_path]))
    dt = time.perf_counter() - t
    assert n == n_dirs * per_dir
    assert dt < 2.0, f"{n} files took {dt:.2f}s"  # ~0.05 s on the dev box


# ---------------------------------------------------------------- content hash


def test_content_hash(tmp_path):
    p = make_photo(tmp_path / "a.png", "noise", (900, 700))  # > 1 MiB, crosses chunk boundaries
    data = p.read_bytes()
    assert len(data) > 1 << 20
    assert content_hash(p) == hashlib.sha256(data).hexdigest()
    assert content_hash(str(touch(tmp_path / "e.jpg", b""))) == hashlib.sha256(b"").hexdigest()
    q = touch(tmp_path / "moved" / "b.jpg", data)
    assert content_hash(q) == content_hash(p)


# ---------------------------------------------------------------- diff


def test_diff_categories():
    entries = [
        FileEntry("/p/new.jpg", 10, 1),
        FileEntry("/p/same.jpg", 20, 2),
        FileEntry("/p/bigger.jpg", 31, 3),
        FileEntry("/p/touched.jpg", 40, 5),
        FileEntry("/p/same.jpg", 20, 2),  # duplicates are ignored
    ]
    known = {
        "/p/same.jpg": (20, 2),
        "/p/bigger.jpg": (30, 3),
        "/p/touched.jpg": [40, 4],  # lists (DB rows) are fine
        "/p/deleted.jpg": (50, 5),
        "/p/also_deleted.jpg": (60, 6),
    }
    d = diff(iter(entries), known)
    assert isinstance(d, ScanDiff)
    assert paths(d.new) == ["/p/new.jpg"]
    assert paths(d.changed) == ["/p/bigger.jpg", "/p/touched.jpg"]
    assert d.unchanged == ["/p/same.jpg"]
    assert d.gone == ["/p/also_deleted.jpg", "/p/deleted.jpg"]
    assert d.unreachable == []


def test_diff_unreadable_folders_are_not_gone():
    known = {"/p/a.jpg": (1, 1), "/p/locked/b.jpg": (2, 2), "/p/locked2/c.jpg": (3, 3), "/p/lockedX.jpg": (4, 4)}
    d = diff([FileEntry("/p/a.jpg", 1, 1)], known, unreadable=["/p/locked/", "/p/locked2"])
    assert d.unchanged == ["/p/a.jpg"]
    assert d.unreachable == ["/p/locked/b.jpg", "/p/locked2/c.jpg"]
    assert d.gone == ["/p/lockedX.jpg"]


def test_diff_end_to_end(tmp_path):
    a = make_photo(tmp_path / "a.jpg", "red_circle", (64, 48))
    b = make_photo(tmp_path / "b.jpg", "blue_square", (64, 48))
    known = {e.path: (e.size, e.mtime_ns) for e in scan([tmp_path])}
    os.rename(a, tmp_path / "renamed.jpg")
    make_photo(b, "sky", (80, 60))
    os.utime(b, ns=(1, 1))
    make_photo(tmp_path / "c.jpg")
    d = diff(scan([tmp_path]), known)
    base = os.path.realpath(tmp_path)
    assert sorted(os.path.basename(p) for p in paths(d.new)) == ["c.jpg", "renamed.jpg"]
    assert paths(d.changed) == [os.path.join(base, "b.jpg")]
    assert d.gone == [os.path.join(base, "a.jpg")]
    # a move is found by content hash between new and gone
    moved = [e for e in d.new if content_hash(e.path) == hashlib.sha256(Path(tmp_path / "renamed.jpg").read_bytes()).hexdigest()]
    assert [os.path.basename(e.path) for e in moved] == ["renamed.jpg"]
