"""Shared fixtures.  Helper modules live next to this file and are importable because pyproject.toml sets
pytest's ``pythonpath = ["tests"]``: photos.py (drawn photos, ``from photos import ...``), shapes.py,
libtools.py (the tiny captioner, photo sets, SQL peeks) and serve_library.py (the library the serve tests use)."""
from __future__ import annotations

from pathlib import Path

import pytest

from libtools import KINDS, make_set, tiny_captioner
from photos import make_bad_files, make_photo

INDEX_KW = dict(batch_size=8, workers=0, progress=False)


@pytest.fixture
def photo(tmp_path):
    """Factory: ``photo("a/b.jpg", kind="red_circle", ...)`` → Path under tmp_path (see photos.make_photo)."""

    def make(name: str = "photo.jpg", **kw) -> Path:
        return make_photo(tmp_path / name, **kw)

    return make


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(folder, {name: expected DecodeError reason substring}) — see photos.make_bad_files."""
    folder = tmp_path_factory.mktemp("bad")
    return folder, make_bad_files(folder)


@pytest.fixture(scope="session")
def indexed_library(tmp_path_factory) -> tuple[Path, Path]:
    """(base, db): a library indexed once per session with ``tiny_captioner(0)``, over ``base/A`` (8 photos,
    3 of them in A/sub) and ``base/A2`` (3 photos; a sibling whose name starts with "A").

    Read-only: tests that index, delete or damage anything build their own library under tmp_path."""
    from imgsearch import Library

    base = tmp_path_factory.mktemp("indexed")
    a, b = base / "A", base / "A2"
    make_set(a, KINDS[:5], "a")
    make_set(a / "sub", KINDS[5:], "s")
    make_set(b, ["red_circle", "sky", "noise"], "b")
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([a, b], **INDEX_KW)
    return base, db


@pytest.fixture(scope="session")
def served_library(tmp_path_factory) -> tuple[Path, Path, Path, dict[str, int]]:
    """(base, db, pics, ids): the library of serve_library.PHOTOS (known captions, one broken file), with
    ``base/outside`` holding files that must never be served.  Shared by test_serve_api.py and
    test_serve_browser.py; read-only (the serve tests that index build their own under tmp_path)."""
    from serve_library import make_served_library

    return make_served_library(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def live_server(served_library):
    """serve_library.LiveServer (``.url``, ``.port``): a real uvicorn on a free loopback port serving
    ``served_library`` (models and caches warmed up), for the tests of one module."""
    from imgsearch import Library
    from imgsearch.serve.app import create_app
    from serve_library import LiveServer

    base, db, pics, ids = served_library
    lib = Library(db, create=False)
    with LiveServer(create_app(lib, warm_up=True)) as srv:
        yield srv
    lib.close()


@pytest.fixture
def tiny_model(monkeypatch):
    """The CLI loads the shipped checkpoint; make it load the tiny test captioner instead."""
    from imgsearch.model.captioner import Captioner
    from imgsearch.models import Models

    cap = tiny_captioner(0)
    monkeypatch.setattr(Captioner, "load", classmethod(lambda cls, path=None, device="auto": cap))
    monkeypatch.setattr(Models, "version", lambda self: cap.version)
    return cap


@pytest.fixture(scope="session")
def query_library(tmp_path_factory):
    """(db, pics, {file name: photo id}): tests/query_library.py's dated, captioned photos, built once and only
    read (test_dates.py, test_exclude_combine.py)."""
    from query_library import build

    return build(tmp_path_factory.mktemp("query_library"))
