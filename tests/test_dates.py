"""Dates: --after / --before (EXIF date taken, else the file's mtime, and which one is said) and --sort
relevance|newest|oldest, through Library.query, the CLI, /api/search and the web page (headless Chromium).

The photos carry EXIF dates written by the test, or none and a file mtime set with os.utime
(tests/query_library.py)."""
from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.errors import UserError
from imgsearch.search.dates import parse_bound, parse_range
from query_library import PHOTOS, names

ALL = set(PHOTOS)
BY_DATE = ["dogs_beaches.jpg", "cat_beach.jpg", "dog_shirt.jpg", "dog_park.jpg", "dog_beach.jpg", "car.jpg",
           "dog_sofa.jpg"]                                       # newest first
DOGS = {"dog_beach.jpg", "dog_park.jpg", "dogs_beaches.jpg", "dog_shirt.jpg", "dog_sofa.jpg"}
# (after, before) → the photos dated in the range (both bounds include the period they name)
RANGES = [
    ("2024", None, {"dog_park.jpg", "cat_beach.jpg", "dogs_beaches.jpg", "dog_shirt.jpg"}),
    (None, "2023", {"dog_beach.jpg", "car.jpg", "dog_sofa.jpg"}),
    ("2024-06", "2024-06", {"cat_beach.jpg", "dog_shirt.jpg"}),
    ("2023-12-31", "2023-12-31", {"dog_beach.jpg"}),                 # 23:59:59 is still that day
    ("2024-06-30", "2024-07", {"cat_beach.jpg", "dogs_beaches.jpg"}),
    ("2022", "2022-03-10", {"car.jpg"}),                             # a file date (no EXIF)
    ("2024-01-01T00:00", "2024-01-01T00:00", {"dog_park.jpg"}),     # an instant, kept on both sides
    ("2025", None, set()),
]


@pytest.fixture(scope="module")
def dated(query_library):
    return query_library


@pytest.fixture(scope="module")
def lib(dated):
    db, pics, ids = dated
    with Library(db, create=False) as lib:
        yield lib


# ---------------------------------------------------------------------------- the bounds

@pytest.mark.parametrize("value, start, end", [
    ("2024", datetime(2024, 1, 1), datetime(2025, 1, 1)),
    ("2024-06", datetime(2024, 6, 1), datetime(2024, 7, 1)),
    ("2024-12", datetime(2024, 12, 1), datetime(2025, 1, 1)),
    ("2024-6", datetime(2024, 6, 1), datetime(2024, 7, 1)),
    ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),
    (" 2024-06-15 ", datetime(2024, 6, 15), datetime(2024, 6, 16)),
    (date(2024, 6, 15), datetime(2024, 6, 15), datetime(2024, 6, 16)),
    ("2024-06-15T10:30", datetime(2024, 6, 15, 10, 30), datetime(2024, 6, 15, 10, 30, 0, 1)),
])
def test_a_bound_is_the_whole_period_it_names(value, start, end):
    assert parse_bound(value, end=False) == start        # --after: from its first instant
    assert parse_bound(value, end=True) == end           # --before: up to its last (exclusive: the next one)


@pytest.mark.parametrize("value", ["2024-13", "2023-02-29", "yesterday", "20244", "2024/06", "06-2024",
                                   "2024-06-15T25:00", "-1", "2024-00"])
def test_a_bad_date_is_one_line_user_error(value):
    with pytest.raises(UserError) as e:
        parse_range(after=value)
    assert "\n" not in str(e.value) and "YYYY-MM-DD" in str(e.value) and "after" in str(e.value)


def test_after_later_than_before_is_an_error(lib):
    with pytest.raises(UserError, match="later than"):
        lib.query("dog", after="2024-07", before="2024-06")


# ---------------------------------------------------------------------------- Library.query

@pytest.mark.parametrize("after, before, want", RANGES)
def test_date_range_filters_every_query(lib, after, before, want):
    # hybrid with no relevance bar returns every photo: the range alone decides
    assert set(names(lib.query("dog", k=20, min_score=0, after=after, before=before))) == want
    assert set(names(lib.query("dog", k=20, mode="bm25", after=after, before=before))) == want & DOGS
    if want:   # no text: the photos of the range, by date
        assert set(names(lib.query(after=after, before=before, k=20))) == want


def test_hits_say_the_date_and_where_it_came_from(lib):
    hits = {h.path.rsplit("/", 1)[1]: h for h in lib.query("dog", k=20, min_score=0)}
    for name, (_, _, taken, mtime) in PHOTOS.items():
        h = hits[name]
        assert h.taken_at == (taken or mtime).isoformat()
        assert h.date_source == ("exif" if taken else "file")
        d = h.to_dict()
        assert (d["taken_at"], d["date_source"]) == (h.taken_at, h.date_source)
        json.dumps(d)


def test_sort_by_date(lib):
    assert names(lib.query(sort="newest", k=20)) == BY_DATE
    assert names(lib.query(sort="oldest", k=20)) == BY_DATE[::-1]
    # no text with a date filter: newest first by default
    assert names(lib.query(after="2024", k=20)) == [n for n in BY_DATE if n in RANGES[0][2]]
    # with text: the matches, by date (each keeps its relevance score)
    dogs = lib.query("dog", mode="bm25", sort="newest", k=20)
    assert names(dogs) == [n for n in BY_DATE if n in DOGS]
    assert [h.rank for h in dogs] == list(range(1, len(dogs) + 1))
    by_score = {h.id: h.score for h in lib.query("dog", mode="bm25", k=20)}
    assert {h.id: h.score for h in dogs} == by_score
    assert names(lib.query("dog", mode="bm25", sort="oldest", k=20, before="2023")) == \
        ["dog_sofa.jpg", "dog_beach.jpg"]
    assert names(lib.query("dog", sort="relevance", k=20, min_score=0)) != \
        names(lib.query("dog", sort="newest", k=20, min_score=0))


@pytest.mark.parametrize("kw", [
    dict(text="dog", after="2024", min_score=0),
    dict(text="dog", sort="newest", min_score=0),
    dict(text="dog", mode="bm25", sort="oldest"),
    dict(text=None, sort="newest"),
    dict(text=None, sort="oldest", before="2024-06"),
    dict(text="dog", mode="dense", after="2022", before="2024-06", min_score=0),
])
def test_dated_rankings_are_prefix_stable(lib, kw):
    kw = dict(kw)
    text = kw.pop("text")
    full = [h.id for h in lib.query(text, k=50, **kw)]
    assert full
    for n in range(1, len(full) + 1):
        assert [h.id for h in lib.query(text, k=n, **kw)] == full[:n], n


def test_bad_arguments(lib):
    with pytest.raises(UserError, match="empty query"):
        lib.query()
    with pytest.raises(UserError, match="empty query"):
        lib.query("   ")
    with pytest.raises(UserError, match="sort must be one of relevance, newest, oldest"):
        lib.query("dog", sort="latest")
    with pytest.raises(UserError, match="invalid before date"):
        lib.query("dog", before="June")


# ---------------------------------------------------------------------------- CLI

runner = CliRunner()


def cli(*args):
    from imgsearch.cli import app

    return runner.invoke(app, [str(a) for a in args])


def test_cli_dates(dated, lib):
    db, pics, ids = dated
    r = cli("query", "--after", "2024", "--sort", "newest", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert [g["path"].rsplit("/", 1)[1] for g in got] == [n for n in BY_DATE if n in RANGES[0][2]]
    assert {g["path"].rsplit("/", 1)[1]: g["date_source"] for g in got}["dog_shirt.jpg"] == "file"
    assert got[0]["taken_at"] == "2024-07-01T00:00:00" and got[0]["date_source"] == "exif"

    r = cli("query", "dog", "--before", "2023", "--mode", "bm25", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    assert [g["id"] for g in json.loads(r.stdout)] == [h.id for h in lib.query("dog", mode="bm25", before="2023")]

    r = cli("query", "dog", "--mode", "bm25", "--sort", "oldest", "--db", db)   # piped: tab-separated
    assert r.exit_code == 0, r.output
    assert [ln.split("\t")[2].rsplit("/", 1)[1] for ln in r.stdout.splitlines()] == \
        [n for n in BY_DATE[::-1] if n in DOGS]

    for args, msg in [(("dog", "--after", "2024-13"), "invalid after date '2024-13'"),
                      (("dog", "--sort", "latest"), "sort must be one of"),
                      ((), "give TEXT, --like PHOTO, or --after/--before")]:
        r = cli("query", *args, "--db", db)
        assert r.exit_code != 0
        assert msg in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_table_shows_the_date_and_its_source(lib, capsys):
    from imgsearch import cli_output

    cli_output.print_hits(lib.query(after="2024-06", before="2024-06"))
    out = capsys.readouterr().out
    assert "2024-06-30 12:00" in out and "2024-06-15 12:00 (file)" in out
    assert "2024-06-30 12:00 (file)" not in out


# ---------------------------------------------------------------------------- /api/search

@pytest.fixture(scope="module")
def client(lib):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    with TestClient(create_app(lib), base_url="http://127.0.0.1:8765") as c:
        yield c


def api(client, status=200, **params):
    r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    return r.json()


def test_api_dates(client, lib):
    d = api(client, after="2024", sort="newest")          # no words: the photos of the range, by date
    assert d["mode"] == "date" and (d["after"], d["before"], d["sort"]) == ("2024", None, "newest")
    assert [h["name"] for h in d["results"]] == [n for n in BY_DATE if n in RANGES[0][2]]
    assert {h["name"]: h["date_source"] for h in d["results"]}["dog_shirt.jpg"] == "file"
    d = api(client, q="dog", after="2024-06", before="2024-06", min_score=0)
    assert {h["name"] for h in d["results"]} == RANGES[2][2]
    want = [h.id for h in lib.query("dog", mode="bm25", sort="oldest", k=24)]
    assert [h["id"] for h in api(client, q="dog", mode="bm25", sort="oldest")["results"]] == want
    assert "invalid after date" in api(client, 400, q="dog", after="2024-13")["detail"]
    assert "sort must be one of" in api(client, 400, q="dog", sort="random")["detail"]
    assert "later than" in api(client, 400, after="2025", before="2024")["detail"]
    assert api(client, 400)["detail"].startswith("missing query")                 # nothing at all: as before


# ---------------------------------------------------------------------------- the web page

def web_driver():
    """A headless Chromium (as test_serve_browser.py makes it); skips when it, chromedriver or selenium is missing."""
    import os
    import shutil

    tb = pytest.importorskip("test_serve_browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = tb._chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-extensions", "--window-size=1280,900"):
        opts.add_argument(arg)
    path = tb.CHROMEDRIVER if os.path.exists(tb.CHROMEDRIVER) else shutil.which("chromedriver")
    drv = webdriver.Chrome(service=Service(path), options=opts)
    drv.set_page_load_timeout(60)
    return tb, drv


def test_web_date_filter_and_sort(lib):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from imgsearch.serve.app import create_app
    from serve_library import LiveServer

    tb, drv = web_driver()

    def shown(d):   # read in one script: the grid may be replaced between two element look-ups
        return [p.rsplit("/", 1)[1] for p in d.execute_script(
            "return [...document.querySelectorAll('#grid .card')].map((c) => c.dataset.path)")]

    try:
        with LiveServer(create_app(lib, warm_up=True)) as srv:
            tb.open_page(drv, srv.url, "?q=dog&min_score=0")
            tb.wait(drv, lambda d: set(shown(d)) == ALL, "every photo for 'dog' with no bar")
            drv.find_element(By.ID, "after").send_keys("2024-06")
            drv.find_element(By.ID, "before").send_keys("2024-06")
            tb.wait(drv, lambda d: set(shown(d)) == RANGES[2][2], "June 2024 only")
            assert "taken from 2024-06 to 2024-06" in drv.find_element(By.ID, "summary").text
            assert "after=2024-06" in drv.current_url and "before=2024-06" in drv.current_url
            dates = dict(drv.execute_script(
                "return [...document.querySelectorAll('#grid .card')].map((c) => "
                "[c.dataset.path.split('/').pop(), c.querySelector('.date').textContent])"))
            assert dates == {"cat_beach.jpg": "2024-06-30", "dog_shirt.jpg": "2024-06-15 (file date)"}

            drv.find_element(By.ID, "q").clear()           # no words: the range, by date
            drv.find_element(By.ID, "before").clear()
            Select(drv.find_element(By.ID, "sort")).select_by_value("oldest")
            want = [n for n in BY_DATE[::-1] if n in RANGES[0][2] - {"dog_park.jpg"}]
            tb.wait(drv, lambda d: shown(d) == want, "from June 2024 on, oldest first")
            assert "by date" in drv.find_element(By.ID, "summary").text

            drv.find_element(By.ID, "after").send_keys("x")
            tb.wait(drv, lambda d: "invalid after date" in d.find_element(By.ID, "error").text, "bad date said")

            tb.open_page(drv, srv.url, "?after=2024&sort=newest")   # the URL keeps the filter
            tb.wait(drv, lambda d: shown(d) == [n for n in BY_DATE if n in RANGES[0][2]], "from the URL")
            assert drv.find_element(By.ID, "after").get_attribute("value") == "2024"
    finally:
        drv.quit()
