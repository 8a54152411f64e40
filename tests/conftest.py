"""Shared pytest setup.  Picture-making helpers live in tests/photos.py (``from photos import ...``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(TESTS), str(ROOT)):  # `import photos` and `import imgsearch` without installing
    if p not in sys.path:
        sys.path.insert(0, p)

from photos import make_bad_files, make_photo  # noqa: E402

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
