"""Text inside photos (OCR, imgsearch/indexer/ocr.py): photos drawn with text by the test — a screenshot-like
page with a sentence, a sign on a drawn scene — are read by the real engine (rapidocr-onnxruntime) and found by
``--mode text`` and by hybrid for a word only their text has; the text is in ``--json``, ``/api/photo/ID`` and
the web viewer; ``index --ocr`` on a library indexed before adds the text without re-captioning.

Needs the extra ``imgsearch[ocr]`` (skips with the reason without it); the viewer test also needs Chromium.
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from libtools import KINDS, tiny_captioner
from photos import draw_scene, make_photo

pytest.importorskip("rapidocr_onnxruntime", reason="OCR engine not installed (pip install 'imgsearch[ocr]')")

PLAIN = KINDS[1:6]

INDEX_KW = dict(batch_size=8, workers=0, progress=False)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
SENTENCE = "Your ferry ticket to Zanzibar"      # "zanzibar": a word no caption, tag or label has


def _font(size: int):
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size)


def screenshot(path: Path, sentence: str = SENTENCE) -> Path:
    """A screenshot-like page: a title bar and one sentence."""
    im = Image.new("RGB", (560, 240), "white")
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 560, 36), fill=(40, 60, 120))
    d.text((24, 110), sentence, font=_font(28), fill=(20, 20, 20))
    im.save(path)
    return path


def sign(path: Path) -> Path:
    """A sign on a drawn scene (sky over a field): a plate on a post reading BAKERY."""
    im = draw_scene("sky", (480, 360))
    d = ImageDraw.Draw(im)
    d.rectangle((232, 200, 248, 340), fill=(90, 60, 30))
    d.rectangle((110, 110, 370, 200), fill=(250, 245, 230), outline=(30, 30, 30), width=4)
    d.text((140, 132), "BAKERY", font=_font(44), fill=(150, 20, 20))
    im.save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def ocr_library(tmp_path_factory):
    """(pics, db, ids, captions before OCR, report of ``index(ocr=True)``): a library indexed without OCR
    (as before the feature), then ``index(ocr=True)`` over it."""
    from imgsearch import Library

    base = tmp_path_factory.mktemp("ocr")
    pics = base / "pics"
    pics.mkdir()
    screenshot(pics / "screenshot.png")
    sign(pics / "sign.jpg")
    make_photo(pics / "circle.jpg", kind="red_circle", size=(320, 240))
    for kind in PLAIN:           # photos without text: a library, not three files, so that fusion has a scale
        make_photo(pics / f"{kind}.jpg", kind=kind, size=(200, 150))
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
        before = _described(db)
        report = lib.index([pics], ocr=True, **INDEX_KW)
    with sqlite3.connect(db) as c:
        ids = {Path(p).name: i for i, p in c.execute("SELECT id, path FROM photos")}
    return pics, db, ids, before, report


def _described(db: Path):
    with sqlite3.connect(db) as c:
        return (c.execute("SELECT id, caption, model_version, indexed_at FROM photos ORDER BY id").fetchall(),
                c.execute("SELECT photo_id, rank, text, score FROM captions ORDER BY photo_id, rank").fetchall())


def _text(db: Path) -> dict[str, str | None]:
    with sqlite3.connect(db) as c:
        return {Path(p).name: t for p, t in c.execute("SELECT path, ocr_text FROM photos")}


def test_index_ocr_adds_text_without_recaptioning(ocr_library):
    pics, db, ids, before, report = ocr_library
    assert _described(db) == before                # captions, model version, indexed_at: untouched
    assert report.added == report.updated == 0 and report.text_read == 3 + len(PLAIN)
    text = _text(db)
    assert "zanzibar" in text["screenshot.png"].lower() and "ferry" in text["screenshot.png"].lower()
    assert "BAKERY" in text["sign.jpg"].upper()
    assert text["circle.jpg"] == ""               # read, nothing found
    with sqlite3.connect(db) as c:
        versions = {v for (v,) in c.execute("SELECT ocr_version FROM photos")}
    from imgsearch.indexer.ocr import OCR_VERSION

    assert versions == {OCR_VERSION}


def test_text_mode_and_hybrid_find_a_word_only_the_text_has(ocr_library):
    from imgsearch import Library

    pics, db, ids, _, _ = ocr_library
    with Library(db, create=False, captioner=tiny_captioner(0)) as lib:
        hits = lib.query("zanzibar", mode="text")
        assert [h.path for h in hits] == [str(pics / "screenshot.png")]
        assert "Zanzibar" in hits[0].ocr_text
        assert lib.query("bakery", mode="text")[0].path == str(pics / "sign.jpg")
        assert lib.query("zanzibar")[0].path == str(pics / "screenshot.png")          # hybrid
        assert lib.query("bakery", mode="bm25") == []                                 # captions don't say it


def test_json_and_api_photo_show_the_text(ocr_library):
    from fastapi.testclient import TestClient

    from imgsearch import Library
    from imgsearch.cli import app
    from imgsearch.serve.app import create_app

    pics, db, ids, _, _ = ocr_library
    r = CliRunner().invoke(app, ["query", "zanzibar", "--mode", "text", "--json", "--db", str(db)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out[0]["path"] == str(pics / "screenshot.png") and "Zanzibar" in out[0]["ocr_text"]
    with Library(db, create=False) as lib, TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
        d = c.get(f"/api/photo/{ids['sign.jpg']}").json()
        assert "BAKERY" in d["ocr_text"].upper()
        assert c.get(f"/api/photo/{ids['circle.jpg']}").json()["ocr_text"] is None
        found = c.get("/api/search", params={"q": "zanzibar", "mode": "text"}).json()
        assert [h["id"] for h in found["results"]] == [ids["screenshot.png"]]


def test_ocr_is_remembered_for_new_photos(ocr_library, tmp_path):
    """After ``index --ocr`` a plain ``index`` reads the text in new photos too (the describe path)."""
    import shutil

    from imgsearch import Library

    pics, db, _, _, _ = ocr_library
    lib_dir = tmp_path / "lib"
    shutil.copytree(db.parent, lib_dir)
    new = tmp_path / "new"
    new.mkdir()
    screenshot(new / "again.png", "Boarding pass for Timbuktu")
    with Library(lib_dir / "library.db", captioner=tiny_captioner(0)) as lib:
        report = lib.index([new], **INDEX_KW)
        assert report.added == 1 and report.text_read == 1
        assert [h.path for h in lib.query("timbuktu", mode="text")] == [str(new / "again.png")]


def test_ocr_missing_says_how_to_install_in_one_line(tmp_path, monkeypatch):
    from imgsearch.cli import app

    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)   # as if the extra were not installed
    make_photo(tmp_path / "pics" / "a.jpg", kind="red_circle", size=(64, 48))
    r = CliRunner().invoke(app, ["index", str(tmp_path / "pics"), "--ocr", "--db", str(tmp_path / "l.db")])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'imgsearch[ocr]'" in lines[0], r.output
    assert not (tmp_path / "l.db").exists()


@pytest.fixture
def chromium():
    """(test_serve_browser's helpers, a headless Chromium driver); skips with its reason without Chromium."""
    tb = pytest.importorskip("test_serve_browser")
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="imgsearch-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = tb._chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    path = tb.CHROMEDRIVER if Path(tb.CHROMEDRIVER).exists() else shutil.which("chromedriver")
    drv = webdriver.Chrome(service=Service(path), options=opts)
    try:
        yield tb, drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.browser
def test_viewer_shows_the_text(ocr_library, chromium):
    from selenium.webdriver.common.by import By

    from imgsearch import Library
    from imgsearch.serve.app import create_app
    from serve_library import LiveServer

    tb, drv = chromium
    pics, db, ids, _, _ = ocr_library
    with Library(db, create=False) as lib, LiveServer(create_app(lib)) as srv:
        tb.open_page(drv, srv.url, "?q=zanzibar&mode=text")
        tb.wait(drv, lambda d: tb.first_path(d) == str(pics / "screenshot.png"), "screenshot first")
        tb.cards(drv)[0].find_element(By.CSS_SELECTOR, ".thumb").click()
        tb.wait(drv, lambda d: "Zanzibar" in d.find_element(By.ID, "viewer-text").text, "the text in the viewer")
