"""`imgsearch serve` end to end in headless Chromium (Selenium): type a query, see the expected
thumbnail first, open it, read its captions, "more like this", mode and folder filters, the status
panel, and hostile file names/captions shown as text.

Needs Chromium + chromedriver (``apt-get install -y chromium chromium-driver``) and selenium
(``pip install selenium``); skips with the reason when any is missing.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import time

import pytest

pytest.importorskip("fastapi")  # the live_server fixture serves the FastAPI app

from serve_library import PHOTOS, SECRET, TAKEN, XSS_CAPTION, XSS_NAME  # noqa: E402

pytestmark = pytest.mark.browser

CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not os.path.exists(CHROMEDRIVER) and not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    if _chromium() is None:
        return "Chromium is not installed (apt-get install -y chromium)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def site(served_library, live_server):
    base, db, pics, ids = served_library
    return live_server.url, pics, ids


@pytest.fixture(scope="module")
def driver():
    profile = tempfile.mkdtemp(prefix="imgsearch-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-extensions", "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    path = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver")
    drv = webdriver.Chrome(service=Service(path), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(drv, cond, what: str):
    """``cond`` polled until true; a card the grid replaced while it was read (stale) is polled again."""
    return WebDriverWait(drv, WAIT_S, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond(d), message=what)


def open_page(drv, url: str, query: str = ""):
    drv.get(url + "/" + query)
    wait(drv, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "page ready")


def cards(drv):
    return drv.find_elements(By.CSS_SELECTOR, "#grid .card")


def first_path(drv):
    cs = cards(drv)
    return cs[0].get_attribute("data-path") if cs else None


def type_query(drv, text: str):
    box = drv.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)


def no_alert(drv):
    try:
        drv.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def image_loaded(drv, element) -> bool:
    return bool(drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", element))


def colour_stats(png: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    n = im.size[0] * im.size[1]
    colours = im.getcolors(maxcolors=n) or []
    big = [c for count, c in colours if count > n * 0.005]
    red = sum(count for count, (r, g, b) in colours if r > 180 and g < 80 and b < 80)
    return big, red


def test_type_query_see_thumbnail_open_photo(site, driver):
    url, pics, ids = site
    open_page(driver, url)
    type_query(driver, "red circle")
    wait(driver, lambda d: first_path(d) == str(pics / "red_circle.jpg"), "red_circle.jpg first")
    summary = driver.find_element(By.ID, "summary").text
    assert "for “red circle”" in summary and " ms" in summary and "result" in summary, summary
    first = cards(driver)[0]
    assert first.find_element(By.CSS_SELECTOR, ".caption").text == PHOTOS["red_circle.jpg"][1]
    assert "score" in first.find_element(By.CSS_SELECTOR, ".score").text
    assert first.find_element(By.CSS_SELECTOR, ".keywords").text.split(" · ") == ["red", "circle", "white", "wall"]
    thumb = first.find_element(By.CSS_SELECTOR, "img")
    wait(driver, lambda d: image_loaded(d, thumb), "thumbnail loaded")
    assert thumb.get_attribute("src").endswith(f"/thumb/{ids['red_circle.jpg']}")
    big, red = colour_stats(driver.get_screenshot_as_png())
    assert len(big) >= 3 and red > 500, (len(big), red)  # not blank; the red thumbnail is on screen
    # the URL keeps the query (reload / share)
    assert "q=red+circle" in driver.current_url

    first.find_element(By.CSS_SELECTOR, ".thumb").click()
    viewer = driver.find_element(By.ID, "viewer")
    wait(driver, lambda d: viewer.get_attribute("open") is not None, "viewer open")
    wait(driver, lambda d: d.find_element(By.ID, "viewer-caption").text == PHOTOS["red_circle.jpg"][1], "caption")
    full = driver.find_element(By.ID, "viewer-img")
    wait(driver, lambda d: image_loaded(d, full), "full photo loaded")
    assert driver.execute_script("return arguments[0].naturalWidth", full) == 320
    caps = [li.find_element(By.CSS_SELECTOR, ".text").text for li in driver.find_elements(By.CSS_SELECTOR, "#viewer-captions li")]
    assert caps == [PHOTOS["red_circle.jpg"][1], PHOTOS["red_circle.jpg"][1] + " again"]
    assert driver.find_element(By.ID, "viewer-path").text == str(pics / "red_circle.jpg")
    assert [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#viewer-tags li")] == ["picture 0.50", "drawing 0.25"]
    big, red = colour_stats(driver.get_screenshot_as_png())
    assert red > 5000, red  # the big red circle of the full photo
    driver.find_element(By.ID, "viewer-close").click()
    wait(driver, lambda d: viewer.get_attribute("open") is None, "viewer closed")


def test_exif_date_and_debounce(site, driver):
    url, pics, ids = site
    open_page(driver, url)
    driver.execute_script("performance.clearResourceTimings()")
    type_query(driver, "blue sky above a green field")
    wait(driver, lambda d: first_path(d) == str(pics / "sky.jpg"), "sky.jpg first")
    time.sleep(0.5)
    n = driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/search')).length")
    assert 1 <= n <= 8, n  # 28 key strokes, debounced (not one request per key)
    cards(driver)[0].find_element(By.CSS_SELECTOR, ".thumb").click()
    wait(driver, lambda d: d.find_element(By.ID, "viewer-taken").text == TAKEN.isoformat().replace("T", " "), "date")
    assert driver.find_element(By.ID, "viewer-size").text.startswith("240 × 320 px")


def test_hostile_names_and_captions_are_text(site, driver):
    url, pics, ids = site
    open_page(driver, url)
    type_query(driver, "purple kite")
    wait(driver, lambda d: first_path(d) == str(pics / XSS_NAME), "the hostile photo first")
    first = cards(driver)[0]
    assert first.find_element(By.CSS_SELECTOR, ".caption").text == XSS_CAPTION
    assert first.find_element(By.CSS_SELECTOR, ".name").text == XSS_NAME
    assert driver.find_elements(By.CSS_SELECTOR, "#grid b, #grid script, img[src='x'], img[src='y']") == []
    first.find_element(By.CSS_SELECTOR, ".thumb").click()
    wait(driver, lambda d: d.find_element(By.ID, "viewer-path").text == str(pics / XSS_NAME), "path as text")
    assert driver.find_element(By.ID, "viewer-caption").text == XSS_CAPTION
    assert driver.find_elements(By.CSS_SELECTOR, "#viewer b, img[src='x'], img[src='y']") == []
    time.sleep(0.3)
    assert no_alert(driver)
    assert driver.execute_script("return document.querySelectorAll('img[onerror]').length") == 0


def test_more_like_this_mode_and_folder(site, driver):
    url, pics, ids = site
    open_page(driver, url, "?q=red+circle")
    wait(driver, lambda d: first_path(d) == str(pics / "red_circle.jpg"), "query from the URL")
    cards(driver)[0].find_element(By.CSS_SELECTOR, ".like").click()
    wait(driver, lambda d: "like red_circle.jpg" in d.find_element(By.ID, "summary").text, "more like this")
    paths = [c.get_attribute("data-path") for c in cards(driver)]
    assert str(pics / "red_circle.jpg") not in paths and len(paths) == len(PHOTOS) - 1
    driver.find_element(By.ID, "clear-like").click()
    wait(driver, lambda d: "for “red circle”" in d.find_element(By.ID, "summary").text, "back to the query")

    Select(driver.find_element(By.ID, "mode")).select_by_value("bm25")
    wait(driver, lambda d: "(keywords (BM25))" in d.find_element(By.ID, "summary").text, "bm25 mode")
    assert first_path(driver) == str(pics / "red_circle.jpg")

    folder = driver.find_element(By.ID, "folder")
    folder.send_keys(str(pics / "sub"))
    type_query(driver, "a black and white floor")
    wait(driver, lambda d: [c.get_attribute("data-path") for c in cards(d)] == [str(pics / "sub" / "checker.jpg")],
         "only the sub folder")
    folder.clear()
    folder.send_keys("/no/such/folder")
    wait(driver, lambda d: "no photos in the library under /no/such/folder" in d.find_element(By.ID, "error").text,
         "folder error shown")
    assert cards(driver) == []


def test_rerank_switch(site, driver):
    url, pics, ids = site
    open_page(driver, url, "?q=red+circle")
    wait(driver, lambda d: first_path(d) == str(pics / "red_circle.jpg"), "query from the URL")
    box = driver.find_element(By.ID, "rerank")
    assert box.is_selected() and box.is_enabled() and "not re-ranked" not in driver.find_element(By.ID, "summary").text
    box.click()
    wait(driver, lambda d: "not re-ranked" in d.find_element(By.ID, "summary").text, "fused order")
    assert "rerank=0" in driver.current_url
    open_page(driver, url, "?q=red+circle&rerank=0")                 # the URL keeps the choice
    wait(driver, lambda d: "not re-ranked" in d.find_element(By.ID, "summary").text, "from the URL")
    assert not driver.find_element(By.ID, "rerank").is_selected()
    Select(driver.find_element(By.ID, "mode")).select_by_value("bm25")
    wait(driver, lambda d: not d.find_element(By.ID, "rerank").is_enabled(), "disabled outside hybrid")


def empty_state(drv):
    found = drv.find_elements(By.CSS_SELECTOR, "#grid .empty")
    return found[0].text if found else None


def test_nothing_found_shows_an_empty_state(site, driver):
    url, pics, ids = site
    open_page(driver, url)
    type_query(driver, "xqzvkj")                                     # random letters: no photo matches
    wait(driver, lambda d: empty_state(d) == "No matching photos", "the empty state")
    assert cards(driver) == [] and "0 results for “xqzvkj”" in driver.find_element(By.ID, "summary").text
    assert driver.find_element(By.ID, "error").get_attribute("hidden") is not None       # not an error
    type_query(driver, "red circle")                                 # a real query replaces it with cards
    wait(driver, lambda d: first_path(d) == str(pics / "red_circle.jpg"), "results again")
    assert empty_state(driver) is None
    open_page(driver, url, "?q=red+circle&min_score=1.5")           # min_score from the URL reaches the API
    wait(driver, lambda d: empty_state(d) == "No matching photos", "cut by min_score")
    assert cards(driver) == [] and "min_score=1.5" in driver.current_url


def test_status_panel(site, driver):
    url, pics, ids = site
    open_page(driver, url)
    driver.find_element(By.ID, "status-toggle").click()
    wait(driver, lambda d: d.find_element(By.ID, "st-photos").text == str(len(PHOTOS)), "photo count")
    assert driver.find_element(By.ID, "st-failed").text == "1"
    assert "6 added" in driver.find_element(By.ID, "st-last").text
    rows = driver.find_elements(By.CSS_SELECTOR, "#st-errors tbody tr")
    assert [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows] == \
        [[str(pics / "broken.jpg"), "not an image"]]


def test_no_console_errors_or_csp_violations(site, driver):
    url, pics, ids = site
    driver.get_log("browser")  # drop earlier entries
    open_page(driver, url, "?q=green+triangle")
    wait(driver, lambda d: first_path(d) == str(pics / "green_triangle.png"), "results")
    time.sleep(0.5)
    bad = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert bad == [], bad
    assert SECRET not in driver.page_source
