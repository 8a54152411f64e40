"""Excluding and combining: "dog -beach" leaves out every photo whose captions, keywords or tags (region tags
too) hold "beach", in every mode and however deep the list; `query TEXT --like PHOTO` fuses the words' and the
photo's rankings — through Library.query, the CLI, /api/search and the web page.

The photos have known captions (tests/query_library.py): four dogs, two of them on a beach, a cat on a beach,
a car, and a dog on a sofa whose only link to the sea is a region tag "seashore"."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.search import filters
from imgsearch.search.engine import combined_weights
from imgsearch.search.settings import FUSION, MODE_SIGNALS, MODES
from query_library import PHOTOS, names

ALL = set(PHOTOS)
BEACH = {"dog_beach.jpg", "cat_beach.jpg", "dogs_beaches.jpg"}
DOGS = {"dog_beach.jpg", "dog_park.jpg", "dogs_beaches.jpg", "dog_shirt.jpg", "dog_sofa.jpg"}
# every photo for the modes whose lists rank all photos (no relevance bar); bm25: only the word matches
EVERY = {m: (DOGS if m == "bm25" else ALL) for m in MODES}
EVERY_KNOWN = ("hybrid", "bm25", "dense", "image", "labels")


@pytest.fixture(scope="module")
def built(query_library):
    return query_library


@pytest.fixture(scope="module")
def lib(built):
    db, pics, ids = built
    with Library(db, create=False) as lib:
        yield lib


# ---------------------------------------------------------------------------- the query's words

@pytest.mark.parametrize("text, words, excluded", [
    ("dog -beach", "dog", (("beach",),)),
    ("dog -Beaches", "dog", (("beach",),)),                 # normalised like the photos' words: stemmed
    ("-beach dog -car -beach", "dog", (("beach",), ("car",))),
    ('dog -"sandy beach"', "dog", (("sandi", "beach"),)),   # a phrase: all of its words must be there
    ("a dog in a t-shirt", "a dog in a t-shirt", ()),       # a hyphen inside a word is no exclusion
    ("dog - beach", "dog - beach", ()),                     # nor a lone one
    ("-the dog", "dog", ()),                                # a stop word excludes nothing
    ("-beach", "", (("beach",),)),
])
def test_split_query(text, words, excluded):
    assert filters.split_query(text) == filters.QueryWords(words, excluded)


# ---------------------------------------------------------------------------- excluding

@pytest.mark.parametrize("mode", MODES)
def test_excluded_photos_never_come_back_in_any_mode(lib, mode):
    plain = set(names(lib.query("dog", k=50, mode=mode, min_score=0)))
    if not plain and mode not in EVERY_KNOWN:
        pytest.skip(f"mode {mode} finds nothing in these photos (e.g. text inside photos: they have none)")
    assert plain == EVERY[mode] and plain & BEACH                       # they are found without the "-"
    got = names(lib.query("dog -beach", k=50, mode=mode, min_score=0))
    assert set(got) == EVERY[mode] - BEACH                              # all the others, even at the end
    assert set(names(lib.query("dog -beaches", k=50, mode=mode, min_score=0))) == set(got)


def test_exclusion_matches_tags_and_region_tags(lib):
    assert set(names(lib.query("dog -seashore", k=50, min_score=0))) == ALL - {"dog_sofa.jpg"}   # a region tag
    assert lib.query("dog -drawing", k=50, min_score=0) == []           # every photo has the tag "drawing"
    assert set(names(lib.query('dog -"sandy beach"', k=50, min_score=0))) == ALL - {"dogs_beaches.jpg"}
    assert set(names(lib.query("dog -beach -sofa -car", mode="dense", k=50, min_score=0))) == \
        {"dog_park.jpg", "dog_shirt.jpg"}


def test_only_excluded_words_list_the_rest_by_date(lib):
    got = lib.query("-beach", k=50)
    assert set(names(got)) == ALL - BEACH and all(h.score == 0 for h in got)
    assert names(got) == [n for n in names(lib.query(sort="newest", k=50)) if n not in BEACH]


@pytest.mark.parametrize("text, kw", [("dog -beach", dict(min_score=0)), ("dog -beach", dict(mode="bm25")),
                                      ("dog -seashore", dict(mode="image", min_score=0)),
                                      ("dog -beach", dict(like="cat_beach.jpg", min_score=0))])
def test_excluding_keeps_rankings_prefix_stable(lib, built, text, kw):
    kw = dict(kw)
    if "like" in kw:
        kw["like"] = str(built[1] / kw["like"])
    full = [h.id for h in lib.query(text, k=50, **kw)]
    assert len(full) >= 3
    for n in range(1, len(full) + 1):
        assert [h.id for h in lib.query(text, k=n, **kw)] == full[:n], n


# ---------------------------------------------------------------------------- combining

def test_combined_weights_count_words_and_photo_equally():
    vecs = {kind: None for kind in FUSION["like_weights"]}
    w = combined_weights(dict(FUSION["weights"], labels=1.0), MODE_SIGNALS["hybrid"], vecs)
    assert sum(w[s] for s in MODE_SIGNALS["hybrid"]) == pytest.approx(1.0)
    assert sum(w[f"like_{k}"] for k in vecs) == pytest.approx(1.0)
    w = combined_weights(dict(FUSION["weights"], labels=0.0), MODE_SIGNALS["hybrid"], vecs)
    assert w["labels"] == 0.0                                           # a signal off stays off


def test_text_and_like_combine(lib, built):
    db, pics, ids = built
    example = str(pics / "cat_beach.jpg")
    text = names(lib.query("dog", k=50, min_score=0.5))
    like = names(lib.query(like=example, k=50))
    both = names(lib.query("dog", like=example, k=50, min_score=0.5))
    # the words' cut holds (only dogs: the cat itself is cut), the photo decides the order among them
    assert set(text) == set(both) == DOGS
    assert like[0] == "cat_beach.jpg" and text[0] != "dog_beach.jpg"
    assert both[0] == "dog_beach.jpg"                                   # a dog, on a beach like the example
    assert both != text
    # in a single-signal mode too; by id as by path; and a combined query honours exclusions and filters
    assert names(lib.query("dog", mode="bm25", like=ids["cat_beach.jpg"], k=50, min_score=0.5))[0] == "dog_beach.jpg"
    assert set(names(lib.query("dog -beach", like=example, k=50, min_score=0))) == ALL - BEACH
    assert set(names(lib.query("dog", like=example, k=50, min_score=0, after="2024"))) == \
        {"dog_park.jpg", "cat_beach.jpg", "dogs_beaches.jpg", "dog_shirt.jpg"}
    # the relevance cut is the words': without a bar the like-only photos stay, below or among the matches
    assert set(names(lib.query("dog", like=example, k=50, min_score=0))) == ALL


# ---------------------------------------------------------------------------- CLI and /api/search: one answer

runner = CliRunner()


def cli_ids(*args):
    from imgsearch.cli import app

    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return [g["id"] for g in json.loads(r.stdout)]


@pytest.fixture(scope="module")
def client(lib):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    with TestClient(create_app(lib), base_url="http://127.0.0.1:8765") as c:
        yield c


def api(client, **params):
    r = client.get("/api/search", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_cli_and_api_give_the_same_answer(built, lib, client):
    db, pics, ids = built
    example = pics / "cat_beach.jpg"
    for q, extra in [("dog -beach", {}), ("dog -beach", {"mode": "bm25"}), ("dog", {"min_score": 0.5}),
                     ("dog -seashore", {"min_score": 0})]:
        flags = [x for kv in extra.items() for x in (f"--{kv[0].replace('_', '-')}", kv[1])]
        want = [h.id for h in lib.query(q, k=24, **extra)]
        assert cli_ids("query", q, "--db", db, "-k", 24, "--json", *flags) == want
        d = api(client, q=q, **extra)
        assert [h["id"] for h in d["results"]] == want
        api_like = api(client, q=q, like=ids["cat_beach.jpg"], **extra)
        cli_like = cli_ids("query", q, "--like", example, "--db", db, "-k", 24, "--json", *flags)
        assert [h["id"] for h in api_like["results"]] == cli_like == \
            [h.id for h in lib.query(q, like=example, k=24, **extra)]
        assert api_like["query"] == q and api_like["like"]["id"] == ids["cat_beach.jpg"]
    # "more like this" alone still leaves out the photo itself, and honours the date filter
    d = api(client, like=ids["cat_beach.jpg"], after="2024")
    assert d["mode"] == "like" and {h["name"] for h in d["results"]} == \
        {"dog_park.jpg", "dogs_beaches.jpg", "dog_shirt.jpg"}


# ---------------------------------------------------------------------------- the web page

def test_web_more_like_this_then_words(lib, built):
    from selenium.webdriver.common.by import By

    from imgsearch.serve.app import create_app
    from serve_library import LiveServer
    from test_dates import web_driver

    db, pics, ids = built
    tb, drv = web_driver()

    def shown(d):
        return [p.rsplit("/", 1)[1] for p in d.execute_script(
            "return [...document.querySelectorAll('#grid .card')].map((c) => c.dataset.path)")]

    want = names(lib.query("dog", like=ids["cat_beach.jpg"], k=24, min_score=0.5))
    try:
        with LiveServer(create_app(lib, warm_up=True)) as srv:
            tb.open_page(drv, srv.url, "?q=cat+-dog&min_score=0.5")
            tb.wait(drv, lambda d: shown(d) == ["cat_beach.jpg"], "the cat, no dogs")
            drv.find_element(By.CSS_SELECTOR, "#grid .card .like").click()
            tb.wait(drv, lambda d: "like cat_beach.jpg" in d.find_element(By.ID, "summary").text, "more like this")
            tb.wait(drv, lambda d: "cat_beach.jpg" not in shown(d) and len(shown(d)) == len(PHOTOS) - 1, "alike")
            drv.find_element(By.ID, "q").send_keys("dog")                # words refine the photos like it
            tb.wait(drv, lambda d: "for “dog” like cat_beach.jpg" in d.find_element(By.ID, "summary").text,
                    "words and photo combined")
            tb.wait(drv, lambda d: shown(d) == want, "the API's combined answer")
            drv.find_element(By.ID, "clear-like").click()                # back to the words it came from
            tb.wait(drv, lambda d: shown(d) == ["cat_beach.jpg"], "back to the search")
            assert drv.find_element(By.ID, "q").get_attribute("value") == "cat -dog"
    finally:
        drv.quit()
