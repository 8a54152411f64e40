"""The web page's polish (issue 14): the start page (summary, recent photos, example searches from the
library's own words) over ``Library.recent/suggestions/summary`` and ``/api/home``; "more" results;
arrow keys and Escape in the viewer; a clear message when the server is gone; panorama thumbnails at a
sensible size; caption scores that do not wrap.

The API tests use FastAPI's TestClient over conftest's ``served_library``; the browser tests (marked
``browser``, skipped without Chromium/chromedriver/selenium) one uvicorn over it whose page asks for 2
photos at a time, so that "more" has something to load.
"""
from __future__ import annotations

import io
import json
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from imgsearch import Library  # noqa: E402
from imgsearch.errors import UserError  # noqa: E402
from imgsearch.serve import thumbs  # noqa: E402
from imgsearch.serve.app import create_app  # noqa: E402
from imgsearch.text.normalize import STOPWORDS  # noqa: E402
from libtools import tiny_captioner  # noqa: E402
from photos import make_photo  # noqa: E402
from serve_library import PHOTOS  # noqa: E402

BASE = "http://127.0.0.1:8765"
KW = dict(batch_size=8, workers=0, progress=False)


@pytest.fixture(scope="module")
def lib(served_library):
    base, db, pics, ids = served_library
    with Library(db, create=False) as lib:
        yield lib


@pytest.fixture(scope="module")
def client(lib):
    with TestClient(create_app(lib), base_url=BASE) as c:
        yield c


def newest_first(ids: dict[str, int]) -> list[str]:
    """The good photos' names, added last first (broken.jpg is a failed file, not a photo)."""
    return sorted((n for n in ids if n in PHOTOS), key=lambda n: -ids[n])


# ---------------------------------------------------------------------------- Library + /api/home

def test_library_recent_suggestions_summary(lib, served_library):
    base, db, pics, ids = served_library
    hits = lib.recent(3)
    assert [h.path for h in hits] == [str(pics / n) for n in newest_first(ids)[:3]]
    assert [h.rank for h in hits] == [1, 2, 3] and all(h.score == 0.0 for h in hits)
    assert hits[0].caption == PHOTOS[newest_first(ids)[0]][1] and hits[0].keywords
    assert len(lib.recent(100)) == len(PHOTOS)                     # the failed file is not a photo
    with pytest.raises(UserError):
        lib.recent(0)
    # words most photos have first: blue (blue square, sky), green (triangle, sky), white (circle, checker);
    # "picture" and "drawing" (tags of all six photos) tell no photo apart: last
    assert lib.suggestions(3) == ["blue", "green", "white"]
    every = lib.suggestions(100)
    assert every[-2:] == ["drawing", "picture"] and len(every) == len(set(every))
    assert not any(w in STOPWORDS or w.isdigit() or len(w) < 3 for s in every for w in s.split())
    assert "2" not in every and "b" not in every and "y" not in every   # the hostile caption's crumbs
    assert lib.suggestions(0) == []
    s = lib.summary()
    assert (s["photos"], s["folders"]) == (len(PHOTOS), 2) and s["db_path"] == str(db)
    assert s["last_index"]["added"] == len(PHOTOS) and s["last_index"]["finished_at"].endswith("Z")


def test_start_page_follows_the_library(tmp_path):
    pics = tmp_path / "pics"
    make_photo(pics / "a" / "one.jpg", kind="red_circle", size=(160, 120))
    make_photo(pics / "b" / "two.jpg", kind="sky", size=(160, 120))
    with Library(tmp_path / "library.db", captioner=tiny_captioner(0)) as lib:
        assert lib.summary()["photos"] == 0 and lib.summary()["last_index"] is None and lib.recent(5) == []
        assert lib.suggestions(5) == []
        lib.index([pics], **KW)
        s = lib.summary()
        assert (s["photos"], s["folders"]) == (2, 2) and s["last_index"]["added"] == 2
        words = lib.suggestions(50)
        assert words and set(words) <= {t for h in lib.recent(5) for t in h.keywords + h.tags}
        make_photo(pics / "b" / "three.jpg", kind="checker", size=(160, 120))
        lib.index([pics], **KW)                      # counted again: the start page is not stuck at 2
        assert lib.summary()["photos"] == 3 and lib.summary()["last_index"]["added"] == 1
        assert [h.path for h in lib.recent(5)] == [str(pics / "b" / "three.jpg"), str(pics / "b" / "two.jpg"),
                                                   str(pics / "a" / "one.jpg")]
        (pics / "b" / "three.jpg").unlink()          # a photo whose file is gone is not shown
        assert [h.path for h in lib.recent(1)] == [str(pics / "b" / "two.jpg")]


def test_api_home(client, served_library):
    base, db, pics, ids = served_library
    r = client.get("/api/home", params={"k": 2, "n": 3})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    d = r.json()
    assert d["summary"]["photos"] == len(PHOTOS) and d["summary"]["folders"] == 2
    assert d["summary"]["last_index"]["added"] == len(PHOTOS)
    assert d["suggestions"] == ["blue", "green", "white"]
    first = newest_first(ids)[0]
    assert [h["name"] for h in d["recent"]] == [n.rsplit("/", 1)[-1] for n in newest_first(ids)[:2]]
    top = d["recent"][0]
    assert top["score"] is None and top["path"] == str(pics / first) and top["caption"] == PHOTOS[first][1]
    assert top["thumb_url"] == f"/thumb/{ids[first]}" and top["photo_url"] == f"/photo/{ids[first]}"
    assert len(client.get("/api/home").json()["recent"]) == len(PHOTOS)   # default k: 24
    for bad in ({"k": 0}, {"k": 201}, {"k": "x"}, {"n": -1}, {"n": 51}):
        r = client.get("/api/home", params=bad)
        assert r.status_code == 400 and r.json()["detail"], bad


def test_page_size_and_prefix_stable_pages(lib):
    with TestClient(create_app(lib, page_size=2), base_url=BASE) as c:
        assert c.get("/api/info").json()["k_default"] == 2
        # what "more" relies on: k=4 starts with the k=2 answer
        two, four = ([h["id"] for h in c.get("/api/search", params={"q": "blue", "min_score": 0, "k": k}).json()["results"]]
                     for k in (2, 4))
        assert len(four) == 4 and four[:2] == two


# ---------------------------------------------------------------------------- thumbnails

@pytest.mark.parametrize("size, thumb", [
    ((8000, 1000), (1920, 240)),   # a panorama: short side 240 (it was 320 × 40)
    ((1000, 8000), (240, 1920)),
    ((4000, 3000), (320, 240)),    # an ordinary photo: as before
    ((3000, 4000), (240, 320)),
    ((6000, 4000), (360, 240)),
    ((320, 240), (320, 240)),      # never enlarged
    ((100, 50), (100, 50)),
    ((20000, 100), (1920, 10)),    # a 200:1 strip: the long side is capped
])
def test_thumb_size(size, thumb):
    assert thumbs.thumb_size(*size) == thumb


def test_panorama_thumbnail(tmp_path):
    pics = tmp_path / "pics"
    make_photo(pics / "pano.jpg", kind="stripes", size=(8000, 1000))
    make_photo(pics / "tall.png", kind="gradient", size=(300, 2400))
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **KW)
        ids = {h.path.rsplit("/", 1)[-1]: h.id for h in lib.recent(10)}
        with TestClient(create_app(lib), base_url=BASE) as c:
            r = c.get(f"/thumb/{ids['pano.jpg']}")
            assert r.status_code == 200
            im = Image.open(io.BytesIO(r.content))
            assert im.format == "JPEG" and im.size == (1920, 240)
            # sharp: the stripes are still there (a 320 × 40 thumbnail blown up to a card is a grey blur)
            lo, hi = im.convert("L").crop((0, 100, 400, 140)).getextrema()
            assert lo < 60 and hi > 200, (lo, hi)
            assert "240s1920" in r.headers["etag"]
            tall = Image.open(io.BytesIO(c.get(f"/thumb/{ids['tall.png']}").content))
            assert tall.size == (240, 1920)
            # a thumbnail cached under the old rule (longest side 320) is made again, and the cache replaced
            h = c.get(f"/api/photo/{ids['pano.jpg']}").json()["content_hash"]
            cache = db.parent / "thumbs" / f"{h}.jpg"
            assert cache.read_bytes() == r.content
            old = io.BytesIO()
            Image.new("RGB", (320, 40), "grey").save(old, "JPEG")
            cache.write_bytes(old.getvalue())
            again = c.get(f"/thumb/{ids['pano.jpg']}")
            assert Image.open(io.BytesIO(again.content)).size == (1920, 240)
            assert Image.open(cache).size == (1920, 240)


# ---------------------------------------------------------------------------- the page in Chromium

try:  # test_serve_browser's Chromium driver fixture and helpers; it skips itself without Chromium
    import test_serve_browser as tsb
    from test_serve_browser import driver as _driver  # noqa: F401  (a fixture: pytest finds it here)
except pytest.skip.Exception as e:
    tsb, NO_BROWSER = None, str(e)


@pytest.fixture(scope="module")
def browser(request):
    """(driver, test_serve_browser): skips like test_serve_browser where Chromium is missing."""
    if tsb is None:
        pytest.skip(NO_BROWSER)
    return request.getfixturevalue("_driver"), tsb


@pytest.fixture(scope="module")
def site(lib, served_library):
    """A uvicorn serving the served library with a page size of 2 (models warmed up)."""
    from serve_library import LiveServer

    base, db, pics, ids = served_library
    with LiveServer(create_app(lib, warm_up=True, page_size=2)) as srv:
        yield srv.url, pics, ids


def _ids_of(drv, tsb):
    return [int(c.get_attribute("data-id")) for c in tsb.cards(drv)]


@pytest.mark.browser
def test_start_page(site, browser):
    from selenium.webdriver.common.by import By

    drv, tsb = browser
    url, pics, ids = site
    tsb.open_page(drv, url)
    home = drv.find_element(By.ID, "home")
    tsb.wait(drv, lambda d: home.is_displayed() and len(tsb.cards(d)) == 2, "the start page")
    summary = drv.find_element(By.ID, "home-summary").text
    assert summary.startswith(f"{len(PHOTOS)} photos in 2 folders · last indexed 20"), summary
    assert [c.get_attribute("data-path") for c in tsb.cards(drv)] == [str(pics / n) for n in newest_first(ids)[:2]]
    assert drv.find_element(By.ID, "home-recent").is_displayed()
    assert tsb.cards(drv)[0].find_elements(By.CSS_SELECTOR, ".score") == []       # no query: no score
    examples = drv.find_elements(By.CSS_SELECTOR, "#home-examples button.example")
    assert [b.text for b in examples[:3]] == ["blue", "green", "white"]
    examples[0].click()                                                            # an example runs
    tsb.wait(drv, lambda d: "for “blue”" in d.find_element(By.ID, "summary").text, "the example's results")
    assert drv.find_element(By.ID, "q").get_attribute("value") == "blue" and not home.is_displayed()
    assert tsb.first_path(drv) in (str(pics / "blue_square.jpg"), str(pics / "sky.jpg"))
    assert "q=blue" in drv.current_url
    drv.find_element(By.ID, "q").clear()
    drv.find_element(By.ID, "q").send_keys(" ")                                    # emptied: the start page again
    tsb.wait(drv, lambda d: home.is_displayed() and d.find_element(By.ID, "summary").text == "", "back home")


@pytest.mark.browser
def test_more_loads_more(site, browser):
    from selenium.webdriver.common.by import By

    drv, tsb = browser
    url, pics, ids = site
    tsb.open_page(drv, url, "?q=blue&min_score=0")       # no cut: all six photos match
    tsb.wait(drv, lambda d: len(tsb.cards(d)) == 2, "the first page")
    more = drv.find_element(By.ID, "more")
    first = _ids_of(drv, tsb)
    with urllib.request.urlopen(f"{url}/api/search?q=blue&min_score=0&k=6") as r:
        want = [h["id"] for h in json.load(r)["results"]]
    for n in (4, 6):
        more.click()
        tsb.wait(drv, lambda d: len(tsb.cards(d)) == n, f"{n} photos")
    assert _ids_of(drv, tsb) == want and want[:2] == first
    assert "6 results" in drv.find_element(By.ID, "summary").text
    more.click()                                          # asks for 8, gets 6: that was all
    tsb.wait(drv, lambda d: not more.is_displayed(), "no more")
    assert _ids_of(drv, tsb) == want


@pytest.mark.browser
def test_viewer_arrow_keys_escape_and_score_layout(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    drv, tsb = browser
    url, pics, ids = site
    tsb.open_page(drv, url, "?q=purple+kite&min_score=0")
    tsb.wait(drv, lambda d: len(tsb.cards(d)) == 2, "results")
    drv.find_element(By.ID, "more").click()
    tsb.wait(drv, lambda d: len(tsb.cards(d)) == 4, "4 results")
    paths = [c.get_attribute("data-path") for c in tsb.cards(drv)]
    viewer = drv.find_element(By.ID, "viewer")
    shown = lambda d: d.find_element(By.ID, "viewer-path").text  # noqa: E731
    tsb.cards(drv)[0].find_element(By.CSS_SELECTOR, ".thumb").click()
    tsb.wait(drv, lambda d: viewer.get_attribute("open") is not None and shown(d) == paths[0], "viewer open")
    assert not drv.find_element(By.ID, "viewer-prev").is_enabled()
    keys = lambda k: drv.switch_to.active_element.send_keys(k)  # noqa: E731
    for key, at in ((Keys.ARROW_RIGHT, 1), (Keys.ARROW_RIGHT, 2), (Keys.ARROW_LEFT, 1), (Keys.ARROW_RIGHT, 2),
                    (Keys.ARROW_RIGHT, 3), (Keys.ARROW_RIGHT, 3)):          # the last one stays on the last
        keys(key)
        tsb.wait(drv, lambda d: shown(d) == paths[at], f"photo {at}")
    assert not drv.find_element(By.ID, "viewer-next").is_enabled()
    drv.find_element(By.ID, "viewer-prev").click()
    tsb.wait(drv, lambda d: shown(d) == paths[2], "the previous button")

    # caption scores stay whole, on the first line of their caption, even where the caption wraps
    drv.set_window_size(560, 900)
    try:
        keys(Keys.ARROW_LEFT), keys(Keys.ARROW_LEFT)
        tsb.wait(drv, lambda d: shown(d) == paths[0], "the hostile photo, whose caption is long")
        layout = drv.execute_script("""
            return [...document.querySelectorAll('#viewer-captions li')].map((li) => {
              const t = li.querySelector('.text'), s = li.querySelector('.score');
              const cs = getComputedStyle(t), line = parseFloat(cs.lineHeight) || 1.2 * parseFloat(cs.fontSize);
              return {height: t.getBoundingClientRect().height, line,
                      rects: s.getClientRects().length,
                      dtop: s.getBoundingClientRect().top - t.getBoundingClientRect().top, score: s.textContent};
            });""")
        assert any(x["height"] > 1.5 * x["line"] for x in layout), layout    # the long caption does wrap
        for x in layout:
            assert x["rects"] == 1 and x["dtop"] < 0.5 * x["line"], x
    finally:
        drv.set_window_size(1280, 900)

    keys(Keys.ESCAPE)
    tsb.wait(drv, lambda d: viewer.get_attribute("open") is None, "closed by Escape")


@pytest.mark.browser
def test_unreachable_server_message(lib, browser):
    from selenium.webdriver.common.by import By

    from serve_library import LiveServer

    drv, tsb = browser
    srv = LiveServer(create_app(lib))
    with srv:
        tsb.open_page(drv, srv.url)
    tsb.type_query(drv, "red circle")                     # the server is gone now
    want = f"Cannot reach the imgsearch server at {srv.url}: is `imgsearch serve` still running?"
    tsb.wait(drv, lambda d: d.find_element(By.ID, "error").text == want, "the unreachable message")
    assert "Failed to fetch" not in drv.page_source
