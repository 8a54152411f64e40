"""`imgsearch demo` (the quick start's first command): the shipped sample photos, their licence, and the
shipped model finding them by description through run_demo() and the CLI."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgsearch.cli import app
from imgsearch.demo import LICENSE, PHOTOS, QUERIES, run_demo, sample_photos
from imgsearch.errors import UserError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
EXPECT = {"a cup of coffee": "coffee.jpg", "a cat": "chelsea.jpg", "a man holding a camera": "camera.jpg",
          "a horse": "horse.jpg"}


@pytest.fixture(scope="module")
def captioner():
    """The shipped checkpoint, loaded once for the module (what run_demo loads by itself otherwise)."""
    from imgsearch.model.captioner import Captioner

    return Captioner.load(device="cpu")


@pytest.fixture(scope="module")
def result(captioner):
    return run_demo(captioner=captioner)


def test_sample_photos_ship_with_their_licence():
    photos = sample_photos()
    assert 6 <= len(photos) <= 10
    assert sum(p.stat().st_size for p in photos) < 600_000          # small enough to ship in the wheel
    text = LICENSE.read_text()
    assert "CC0" in text and "public domain" in text
    named = set(re.findall(r"^  (\S+\.jpg) ", text, re.M))
    assert named == {p.name for p in photos}, "LICENSE.txt names every shipped photo and only those"
    if sys.version_info >= (3, 11):
        import tomllib

        data = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert set(data["tool"]["setuptools"]["package-data"]["imgsearch.demo"]) >= {"photos/*", "LICENSE.txt"}


def test_demo_finds_the_sample_photos_by_description(result):
    assert (result.photos, result.failed, result.library) == (len(sample_photos()), 0, None)
    assert result.photos_dir == str(PHOTOS)
    assert [a.query for a in result.answers] == list(QUERIES)
    top = {a.query: Path(a.hits[0].path).name for a in result.answers if a.hits}
    for query, name in EXPECT.items():
        assert top.get(query) == name, (query, [(Path(h.path).name, h.caption, h.tags)
                                                for a in result.answers if a.query == query for h in a.hits])
    assert all(1 <= len(a.hits) <= 3 for a in result.answers)
    assert result.load_s > 0 and result.index_s > 0 and all(a.ms > 0 for a in result.answers)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["answers"][0]["hits"][0]["path"] == str(PHOTOS / "coffee.jpg")


def test_demo_cli_prints_answers_and_timings(captioner, monkeypatch, tmp_path):
    from imgsearch.model.captioner import Captioner

    monkeypatch.setattr(Captioner, "load", classmethod(lambda cls, path=None, device="auto": captioner))
    keep = tmp_path / "kept"
    r = runner.invoke(app, ["demo", "a cup of coffee", "a cat", "-k", "2", "--keep", str(keep)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert re.search(r"indexed 8 photos in \d+\.\d s \(\d+\.\d photos/s", out), out
    assert re.search(r'"a cup of coffee"  \(\d+ ms\)\n +1 +-?\d+\.\d{3}  coffee\.jpg ', out), out
    assert re.search(r'"a cat"  \(\d+ ms\)\n +1 +-?\d+\.\d{3}  chelsea\.jpg ', out), out
    assert "LICENSE.txt" in out and f"imgsearch query --db {keep}" in out

    q = runner.invoke(app, ["query", "a man holding a camera", "--db", str(keep), "--no-rerank", "--json"])
    assert q.exit_code == 0, q.output
    assert json.loads(q.stdout)[0]["path"] == str(PHOTOS / "camera.jpg")

    r = runner.invoke(app, ["demo", "a cat", "-k", "0"])     # refused before any work
    assert r.exit_code == 1 and r.stderr == "imgsearch: error: k must be a whole number of at least 1, not 0\n"


def test_demo_needs_a_query():
    with pytest.raises(UserError, match="at least one query"):
        run_demo([])
