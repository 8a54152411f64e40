"""A damaged cached thumbnail (truncated, or garbage) is made again, never served (bench/faults.py found
truncated ones served as they were)."""
from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from imgsearch.paths import thumbs_dir  # noqa: E402
from imgsearch.serve.app import create_app  # noqa: E402
from serve_library import make_served_library  # noqa: E402


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_cached_thumbnail_is_made_again(tmp_path, damage):
    base, db, pics, ids = make_served_library(tmp_path)
    pid = ids["red_circle.jpg"]
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:
        first = c.get(f"/thumb/{pid}")
        assert first.status_code == 200
        [cached] = list(thumbs_dir(db).glob("*.jpg"))
        data = cached.read_bytes()
        cached.write_bytes({"truncated": data[: len(data) // 2],
                            "garbage": b"\x00not a jpeg" * 50}[damage])
        again = c.get(f"/thumb/{pid}")
    assert again.status_code == 200
    Image.open(io.BytesIO(again.content)).load()          # a whole JPEG, not the damaged bytes
    assert again.content == first.content
    assert cached.read_bytes() == first.content           # and the cache repaired
