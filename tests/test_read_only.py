"""A read-only library (a read-only mount, a DVD, a share) is searched as it is: opened with SQLite's
``mode=ro`` / ``immutable=1`` (no ``-shm`` file needed), caches built in the user cache folder, indexing
refused with one line ("read-only library: searching only").

The real thing needs a read-only file system: as root (these tests' usual user) a read-only bind mount is
made; elsewhere those tests are skipped and the explicit switch (``read_only=True``, ``$IMGSEARCH_READ_ONLY``),
which the auto-detection also uses, is tested on a copy."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgsearch import Library, paths
from imgsearch.cli import app
from imgsearch.errors import ReadOnlyError, StoreError
from libtools import KINDS, make_set, tiny_captioner

INDEX_KW = dict(batch_size=8, workers=0, progress=False)


@pytest.fixture(scope="module")
def source_library(tmp_path_factory):
    """(pics, lib_dir): 8 photos indexed once."""
    base = tmp_path_factory.mktemp("ro_src")
    pics = base / "pics"
    make_set(pics, KINDS, "p")
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
    return pics, db.parent


def _copy(src: Path, dst: Path, *, drop_caption_cache: bool = False) -> Path:
    shutil.copytree(src, dst)
    for side in ("library.db-wal", "library.db-shm", "library.db.lock"):
        (dst / side).unlink(missing_ok=True)
    if drop_caption_cache:   # stale on the medium: must be rebuilt somewhere else than the library folder
        (dst / "library.db.captions.faiss").unlink()
    return dst / "library.db"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    cache = tmp_path / "usercache"
    monkeypatch.setenv("IMGSEARCH_CACHE", str(cache))
    return cache


@contextlib.contextmanager
def read_only_mount(src: Path, where: Path):
    """``where``: a read-only bind mount of ``src`` (skips the test where mounting is not allowed)."""
    where.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(src), str(where)], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], capture_output=True, timeout=30)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


def test_read_only_switch_searches_and_refuses_to_index(source_library, tmp_path, user_cache):
    pics, src = source_library
    db = _copy(src, tmp_path / "copy", drop_caption_cache=True)
    with Library(src / "library.db", read_only=True) as lib:
        want = [(h.path, h.caption) for h in lib.query("a red circle", k=5, mode="dense")]
    before = (db.read_bytes(), _listing(db.parent))

    with Library(db, read_only=True) as lib:
        assert lib.read_only
        got = [(h.path, h.caption) for h in lib.query("a red circle", k=5, mode="dense")]
        assert lib.status()["photos"] == 8
        with pytest.raises(ReadOnlyError, match="read-only library: searching only"):
            lib.index([pics], **INDEX_KW)
    assert got == want
    after = (db.read_bytes(), _listing(db.parent))
    assert after[0] == before[0]                                   # the database is untouched
    new = set(after[1]) - set(before[1]) - {"library.db-wal", "library.db-shm"}  # mode=ro may make these
    assert not new, new                                            # no cache, lock or thumbnail written there
    assert (paths.user_cache_dir(db) / "library.db.captions.faiss").is_file()  # rebuilt in the user cache

    # the environment switch, through the CLI: one line, exit 1, nothing indexed
    env_runner = CliRunner(env={"IMGSEARCH_READ_ONLY": "1", "IMGSEARCH_CACHE": str(user_cache)})
    r = env_runner.invoke(app, ["index", str(pics), "--db", str(db.parent), "--workers", "0"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [f"imgsearch: error: read-only library: searching only ({db})"]


def test_read_only_mount_without_shm(source_library, tmp_path, user_cache):
    """A copy on a read-only file system, without its -wal/-shm: status, query, serve and a refused index."""
    pics, src = source_library
    db_src = _copy(src, tmp_path / "copy", drop_caption_cache=True)
    with read_only_mount(db_src.parent, tmp_path / "ro") as ro:
        db = ro / "library.db"
        assert not paths.folder_writable(ro) and paths.is_read_only(db)
        assert not (ro / "library.db-shm").exists()

        with Library(db, create=False) as lib:     # auto-detected: no switch
            assert lib.read_only
            hits = lib.query("a red circle", k=3, mode="dense")
            assert len(hits) == 3 and all(h.path.startswith(str(pics)) for h in hits)
            assert lib.status()["photos"] == 8

        runner = CliRunner(env={"IMGSEARCH_CACHE": str(user_cache)})
        r = runner.invoke(app, ["status", "--db", str(ro), "--json"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["query", "a red circle", "--db", str(ro), "--mode", "dense", "--json"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["index", str(pics), "--db", str(ro), "--workers", "0"])
        assert r.exit_code == 1
        assert r.output.strip().splitlines() == [f"imgsearch: error: read-only library: searching only ({db})"]

        from fastapi.testclient import TestClient

        from imgsearch.serve.app import create_app

        with TestClient(create_app(db), base_url="http://127.0.0.1") as client:
            res = client.get("/api/search", params={"q": "a red circle", "mode": "dense", "k": 3})
            assert res.status_code == 200, res.text
            pid = res.json()["results"][0]["id"]
            t = client.get(f"/thumb/{pid}")
            assert t.status_code == 200 and t.content[:2] == b"\xff\xd8"
        assert list((paths.user_cache_dir(db) / "thumbs").glob("*.jpg"))   # cached outside the medium
        assert (paths.user_cache_dir(db) / "library.db.captions.faiss").is_file()
        assert not (ro / "library.db-shm").exists()


def test_no_library_on_a_read_only_folder(tmp_path, user_cache):
    (tmp_path / "empty").mkdir()
    with read_only_mount(tmp_path / "empty", tmp_path / "ro") as ro:
        with pytest.raises(StoreError, match="read-only"):
            Library(ro / "library.db", captioner=tiny_captioner(0))
        assert not (ro / "library.db").exists()
