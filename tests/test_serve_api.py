"""`imgsearch serve`: the JSON API, thumbnails, and the safety rules, through FastAPI's TestClient
(plus a real uvicorn for raw, un-normalised request paths).

The library searched is conftest's ``served_library`` (see serve_library.py): indexed for real by the tiny
untrained captioner, then given known captions through the store, so that searches (which go through the
real query path) have a deterministic best hit.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from imgsearch import Library  # noqa: E402
from imgsearch.serve import host_warning, is_loopback, serve_command  # noqa: E402
from imgsearch.serve.app import create_app  # noqa: E402
from libtools import ROOT, tiny_captioner  # noqa: E402
from photos import make_photo  # noqa: E402
from serve_library import PHOTOS, SECRET, XSS_CAPTION, XSS_NAME  # noqa: E402

KW = dict(batch_size=8, workers=0, progress=False)
BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def client(served_library):
    base, db, pics, ids = served_library
    lib = Library(db, create=False)
    app = create_app(lib, warm_up=True)
    with TestClient(app, base_url=BASE) as c:
        yield c
    lib.close()


def search(client, **params):
    r = client.get("/api/search", params=params)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------- page + headers

def test_page_static_and_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert 'src="/static/app.js"' in r.text and "http" not in r.text.replace("http-equiv", "")  # no CDN
    for name, ctype in (("app.js", "javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and ctype in r.headers["content-type"], name
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/api/status").headers["content-security-policy"] == csp


def test_javascript_never_writes_html():
    js = (ROOT / "imgsearch/serve/static/app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    html = (ROOT / "imgsearch/serve/static/index.html").read_text()
    assert "<script>" not in html and not re.search(r"\son[a-z]+\s*=", html)  # no inline handlers


def test_foreign_host_header_refused(client):
    r = client.get("/api/info", headers={"host": "evil.example:8765"})  # DNS rebinding
    assert r.status_code == 400 and "Host" in r.json()["detail"]
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host


# ---------------------------------------------------------------------------- search

def test_info_lists_library_modes(client):
    from imgsearch.search.settings import MODES

    info = client.get("/api/info").json()
    assert [m["id"] for m in info["modes"]] == list(MODES)
    assert info["default_mode"] in MODES and all(m["label"] for m in info["modes"])


@pytest.mark.parametrize("query,expected", [
    ("red circle", "red_circle.jpg"),
    ("a green triangle tent in the snow", "green_triangle.png"),
    ("checkerboard floor", "sub/checker.jpg"),
])
def test_search_expected_first_in_every_mode(client, served_library, query, expected):
    base, db, pics, ids = served_library
    for mode in [m["id"] for m in client.get("/api/info").json()["modes"]]:
        data = search(client, q=query, mode=mode, k=5)
        assert data["query"] == query and data["mode"] == mode
        assert isinstance(data["took_ms"], (int, float)) and data["took_ms"] >= 0
        if mode == "text":   # the text read inside photos (OCR): none in these (tests/test_ocr.py)
            assert data["results"] == []
            continue
        assert data["count"] == len(data["results"]) >= 1
        top = data["results"][0]
        assert top["path"] == str(pics / expected), (mode, [r["path"] for r in data["results"]])
        assert top["id"] == ids[expected]
        assert top["caption"] == PHOTOS[expected][1]
        assert set(top) >= {"id", "path", "score", "caption", "keywords", "tags", "thumb_url", "photo_url"}
        assert top["thumb_url"] == f"/thumb/{top['id']}" and top["photo_url"] == f"/photo/{top['id']}"
        assert top["tags"] == ["picture", "drawing"]
        assert top["keywords"] == [w for w in top["caption"].split() if w in top["keywords"]] and top["keywords"]
        scores = [r["score"] for r in data["results"]]
        assert scores == sorted(scores, reverse=True)


def test_search_rerank_switch_matches_the_library(tmp_path):
    """rerank=true/false reaches Library.query: on a library whose checkpoint re-ranks (photos described by it,
    its scorer exported by the index run) the two differ, and each is what the library answers."""
    from photos import make_photo

    ckpt = tiny_captioner(0).save(tmp_path / "tiny.pt")
    pics = tmp_path / "pics"
    for i, kind in enumerate(["red_circle", "blue_square", "green_triangle", "stripes", "checker", "sky"]):
        make_photo(pics / f"p{i}.jpg", kind=kind, size=(160, 120))
    db = tmp_path / "library.db"
    with Library(db, model=ckpt, device="cpu") as lib:
        lib.index([pics], **KW)
        assert lib.status()["reranking"]["photos"] == 6
        with TestClient(create_app(lib), base_url=BASE) as c:
            got = {}
            for flag, value in (("true", True), ("false", False)):
                r = c.get("/api/search", params={"q": "a red circle on the grass", "k": 6, "rerank": flag})
                assert r.status_code == 200, r.text
                data = r.json()
                want = lib.query("a red circle on the grass", k=6, rerank=value)
                assert data["rerank"] is value
                got[value] = [(x["id"], round(x["score"], 5)) for x in data["results"]]
                assert got[value] == [(h.id, round(h.score, 5)) for h in want]
            assert got[True] != got[False]
            assert c.get("/api/search", params={"q": "red", "rerank": "maybe"}).status_code in (400, 422)


def test_k_limits_results(client):
    assert search(client, q="a photo", k=2, mode="dense")["count"] == 2
    assert search(client, q="a photo", k=100, mode="dense")["count"] == len(PHOTOS)


def test_search_min_score_and_nothing_found(client, served_library):
    """&min_score= reaches Library.query (dense: the relevance is the cosine shown); a query that matches
    nothing answers 200 with no results in every mode; a min_score that is not a number is a 400."""
    base, db, pics, ids = served_library
    every = search(client, q="a blue sky above a green field", mode="dense", k=10, min_score=0)
    assert every["count"] == len(PHOTOS) and every["min_score"] == 0
    bar = every["results"][2]["score"]
    cut = search(client, q="a blue sky above a green field", mode="dense", k=10, min_score=bar)
    assert [r["id"] for r in cut["results"]] == [r["id"] for r in every["results"] if r["score"] >= bar]
    assert 3 <= cut["count"] < len(PHOTOS) and cut["min_score"] == pytest.approx(bar)
    with Library(db, create=False) as lib:
        for mode in ("hybrid", "dense"):
            want = lib.query("blue sky", k=10, mode=mode, min_score=0.3)
            got = search(client, q="blue sky", mode=mode, k=10, min_score=0.3)
            assert [r["id"] for r in got["results"]] == [h.id for h in want], mode
    for mode in [m["id"] for m in client.get("/api/info").json()["modes"]]:
        for q in ("the a of and is", "xqzvkj", "🐶"):
            data = search(client, q=q, mode=mode)
            assert (data["count"], data["results"]) == (0, []), (mode, q)
    assert search(client, q="xqzvkj", mode="dense", min_score=0)["count"] == len(PHOTOS)
    for bad in ("nan", "inf", "lots"):
        r = client.get("/api/search", params={"q": "red", "min_score": bad})
        assert r.status_code == 400 and "min_score" in r.json()["detail"], bad


def test_unsupported_mode_is_a_clear_400(client):
    from imgsearch.search.settings import MODES

    for mode in ("fuzzy", "image" if "image" not in MODES else "IMAGE", "", "x" * 300):
        r = client.get("/api/search", params={"q": "red", "mode": mode})
        if mode == "":
            assert r.status_code == 200  # empty = the default mode
            continue
        assert r.status_code == 400, mode
        detail = r.json()["detail"]
        assert "mode" in detail and all(m in detail for m in MODES) and len(detail) < 200


def test_model_that_cannot_load_is_a_503(served_library, monkeypatch):
    """A text embedder that fails to load is the server's problem, not the request's: 503 with the reason,
    in the API's JSON error shape (it used to be a 400, like every library error)."""
    from imgsearch.text.embed import TextEmbedder

    base, db, pics, ids = served_library

    def broken(*args, **kwargs):
        raise OSError("weights file is damaged")

    monkeypatch.setattr(TextEmbedder, "load", classmethod(broken))
    with Library(db, create=False) as lib, TestClient(create_app(lib), base_url=BASE) as c:
        for mode in ("dense", "hybrid"):
            r = c.get("/api/search", params={"q": "red circle", "mode": mode})
            assert r.status_code == 503, (mode, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json")
            assert set(r.json()) == {"detail"} and "text embedder" in r.json()["detail"], r.text
        assert c.get("/api/search", params={"q": "", "mode": "dense"}).status_code == 400  # bad input stays 400
        assert c.get("/api/info").status_code == 200


def test_hit_json_is_the_hit_plus_web_fields():
    from imgsearch.hits import Hit
    from imgsearch.serve.app import hit_json

    h = Hit(path="/p/a b.jpg", score=float("nan"), caption="a dog", keywords=["dog"], id=7, tags=["animal"], rank=2)
    want = {"id": 7, "rank": 2, "path": "/p/a b.jpg", "name": "a b.jpg", "score": 0.0,
            "caption": "a dog", "keywords": ["dog"], "tags": ["animal"],
            "thumb_url": "/thumb/7", "photo_url": "/photo/7", "taken_at": None, "date_source": None}
    got = hit_json(h)
    assert {key: got[key] for key in want} == want
    assert got == {**h.to_dict(), **{key: want[key] for key in ("score", "name", "thumb_url", "photo_url")}}
    h.score = 0.5
    assert hit_json(h) == {**h.to_dict(), "name": "a b.jpg", "thumb_url": "/thumb/7", "photo_url": "/photo/7"}


def test_folder_filter(client, served_library):
    base, db, pics, ids = served_library
    data = search(client, q="a photo", mode="dense", k=50, folder=str(pics / "sub"))
    assert [r["path"] for r in data["results"]] == [str(pics / "sub" / "checker.jpg")]
    assert data["folder"] == str(pics / "sub")
    assert search(client, q="a photo", mode="dense", k=50, folder=str(pics))["count"] == len(PHOTOS)
    assert search(client, q="a photo", mode="dense", k=50, folder="")["count"] == len(PHOTOS)
    for bad in (str(base / "outside"), str(base / "missing"), "/tmp/../no", "relative/folder", "pics/../..", "a\x00b",
                str(pics) + "\n", "x" * 5000):
        r = client.get("/api/search", params={"q": "a photo", "folder": bad})
        assert r.status_code == 400 and r.json()["detail"], bad
    # the same answer for an existing folder outside the library and a missing one
    d1 = client.get("/api/search", params={"q": "a", "folder": str(base / "outside")}).json()["detail"]
    d2 = client.get("/api/search", params={"q": "a", "folder": str(base / "missing")}).json()["detail"]
    assert d1.replace("outside", "X") == d2.replace("missing", "X")


BAD_QUERIES = [
    "", "   ", "\t\n", "\x00", "\x00\x01\x1b[31m", "red\x00circle", "a" * 10_000, "red " * 600,
    "\u202eelcric der", "🙂🐕🏖️", "e\u0301\u0301\u0301", "\ufeff\u200b\u200d", "ﾚｯﾄﾞ", "Ⅻ ﬁ ß İ",
    "%", "%%", "'; DROP TABLE photos; --", "\" OR 1=1", "<script>alert(1)</script>", "*", "?", "AND OR NOT",
    "NEAR(red circle)", "red*", "\\", "..", "../../etc/passwd", "\uffff\ufffe", "\U0010ffff", "\ud7ff",
]


@pytest.mark.parametrize("q", BAD_QUERIES, ids=range(len(BAD_QUERIES)))
def test_odd_queries_never_500(client, q):
    for mode in ("hybrid", "bm25", "dense"):
        r = client.get("/api/search", params={"q": q, "mode": mode})
        assert r.status_code in (200, 400), (q, mode, r.status_code, r.text[:300])
        body = r.json()
        if r.status_code == 200:
            assert isinstance(body["results"], list) and body["count"] == len(body["results"])
        else:
            assert isinstance(body["detail"], str) and 0 < len(body["detail"]) < 300


@pytest.mark.parametrize("raw", [
    "q=%ED%A0%80", "q=red%ED%B0%80circle", "q=%ED%A0%80%ED%B0%80", "q=%FF%FE", "q=%C0%AF", "q=%E2%82",
    "q=%", "q=%zz", "q=%00", "q", "q=&k=", "k=3", "q=red&k=0", "q=red&k=-1", "q=red&k=abc", "q=red&k=1e3",
    "q=red&k=99999999999999999999", "q=red&q=blue", "like=", "like=abc", "like=-1", "like=1.5", "like=%ED%A0%80",
    "q=red&folder=%ED%A0%80", "q=red&folder=%00", "q=red&mode=%00", "q=" + "x" * 10_000,
])
def test_malformed_urls_never_500(client, raw):
    r = client.get(f"/api/search?{raw}")
    assert r.status_code in (200, 400, 404), (raw, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code != 200:
        assert isinstance(r.json()["detail"], str)


def test_search_gives_json_text_not_html(client, served_library):
    base, db, pics, ids = served_library
    data = search(client, q="purple kite")
    top = data["results"][0]
    assert top["caption"] == XSS_CAPTION and top["name"] == XSS_NAME  # raw text in JSON; the page escapes it
    r = client.get("/api/search", params={"q": "purple kite"})
    assert r.headers["content-type"].startswith("application/json")


def test_more_like_this(client, served_library):
    base, db, pics, ids = served_library
    red = ids["red_circle.jpg"]
    data = search(client, like=red, k=3)
    assert data["mode"] == "like" and data["like"]["id"] == red and data["like"]["name"] == "red_circle.jpg"
    assert 1 <= data["count"] <= 3 and red not in [r["id"] for r in data["results"]]
    # the nearest caption to "a red circle on a white wall" among the others, by the embedder itself
    from imgsearch.text.embed import TextEmbedder

    emb = TextEmbedder.load()
    names = [n for n in PHOTOS if n != "red_circle.jpg"]
    v = emb.embed([PHOTOS[n][1] for n in names]) @ emb.embed([PHOTOS["red_circle.jpg"][1]])[0]
    assert data["results"][0]["id"] == ids[names[int(v.argmax())]]
    assert search(client, like=red, k=50)["count"] == len(PHOTOS) - 1
    sub = search(client, like=red, k=50, folder=str(pics / "sub"))
    assert [r["id"] for r in sub["results"]] == [ids["sub/checker.jpg"]]
    for bad in ("999999", "0", "abc", str(ids["broken.jpg"])):
        assert client.get("/api/search", params={"like": bad}).status_code == 404, bad


# ---------------------------------------------------------------------------- details + status

def test_photo_details(client, served_library):
    base, db, pics, ids = served_library
    sky = ids["sky.jpg"]
    d = client.get(f"/api/photo/{sky}").json()
    assert d["id"] == sky and d["path"] == str(pics / "sky.jpg") and d["name"] == "sky.jpg"
    assert d["caption"] == PHOTOS["sky.jpg"][1]
    assert [c["text"] for c in d["captions"]] == [d["caption"], d["caption"] + " again"]
    assert [c["score"] for c in d["captions"]] == [-0.25, -0.75]
    assert d["tags"] == [{"term": "picture", "score": 0.5}, {"term": "drawing", "score": 0.25}]
    assert d["keywords"] == ["blue", "sky", "green", "field"]
    assert d["taken_at"] == "2021-06-05T14:30:00"
    assert (d["width"], d["height"]) == (240, 320)  # EXIF orientation 6: shown rotated
    assert re.fullmatch(r"[0-9a-f]{64}", d["content_hash"])
    assert d["photo_url"] == f"/photo/{sky}" and d["thumb_url"] == f"/thumb/{sky}"


def test_status(client, served_library):
    base, db, pics, ids = served_library
    st = client.get("/api/status").json()
    assert st["photos"] == len(PHOTOS) and st["failed"] == 1 and st["failed_files_total"] == 1
    assert st["failed_files"] == [{"path": str(pics / "broken.jpg"), "name": "broken.jpg", "reason": "not an image"}]
    assert st["last_index"]["added"] == len(PHOTOS) and st["last_index"]["failed"] == 1
    assert st["db_path"] == str(db) and st["size_bytes"] > 0


# ---------------------------------------------------------------------------- files

def test_thumbnail_made_cached_and_revalidated(client, served_library):
    base, db, pics, ids = served_library
    sky = ids["sky.jpg"]
    h = client.get(f"/api/photo/{sky}").json()["content_hash"]
    cache = db.parent / "thumbs" / f"{h}.jpg"
    cache.unlink(missing_ok=True)
    r = client.get(f"/thumb/{sky}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and max(im.size) <= 320
    assert im.size[1] > im.size[0]  # 320x240 stored, EXIF orientation 6 → portrait
    # rotated the right way: the sky (blue) half is now on the right
    left, right = im.convert("RGB").getpixel((5, im.size[1] // 2)), im.convert("RGB").getpixel((im.size[0] - 5, im.size[1] // 2))
    assert right[2] > 180 and left[1] > 120 and left[2] < 120, (left, right)
    assert cache.is_file() and cache.read_bytes() == r.content
    assert [p.name for p in cache.parent.iterdir() if "tmp" in p.name] == []   # no temporary file left behind
    r2 = client.get(f"/thumb/{sky}", headers={"if-none-match": r.headers["etag"]})
    assert r2.status_code == 304 and r2.content == b"" and r2.headers["etag"] == r.headers["etag"]
    assert client.get(f"/thumb/{sky}", headers={"if-none-match": '"other"'}).status_code == 200
    # served from the cache: a marked cache file (still a whole JPEG: SOI ... EOI) is what comes back
    cache.write_bytes(r.content[:-2] + b"cached" + r.content[-2:])
    assert client.get(f"/thumb/{sky}").content.endswith(b"cached\xff\xd9")
    cache.write_bytes(r.content)


def test_every_thumbnail_and_png(client, served_library):
    base, db, pics, ids = served_library
    for name in PHOTOS:
        r = client.get(f"/thumb/{ids[name]}")
        assert r.status_code == 200, name
        assert max(Image.open(io.BytesIO(r.content)).size) <= 320


def test_full_photo(client, served_library):
    base, db, pics, ids = served_library
    for name, ctype in (("red_circle.jpg", "image/jpeg"), ("green_triangle.png", "image/png"), (XSS_NAME, "image/jpeg")):
        r = client.get(f"/photo/{ids[name]}")
        assert r.status_code == 200 and r.headers["content-type"] == ctype, name
        assert r.content == (pics / name).read_bytes()
        assert r.headers["etag"] and r.headers["x-content-type-options"] == "nosniff"
        assert client.get(f"/photo/{ids[name]}", headers={"if-none-match": r.headers["etag"]}).status_code == 304


def test_photo_in_other_format_is_converted(tmp_path):
    pics = tmp_path / "pics"
    make_photo(pics / "scan.tif", kind="blue_square", size=(200, 150))
    db = tmp_path / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **KW)
        with TestClient(create_app(lib), base_url=BASE) as c:
            r = c.get("/photo/1")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(r.content)).size == (200, 150)


# ---------------------------------------------------------------------------- safety

NOT_PHOTOS = [
    "abc", "-1", "0", "1.5", "1e3", "0x1", " 1", "1 ", "+1", "１", "٣", "999999", "99999999999999999999999",
    "..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "1%2F..%2F..%2Fsecret.txt",
    "..%5C..%5Csecret.txt", "%00", "1%00", "1;", "1?x", "%252e%252e%252f",
]


@pytest.mark.parametrize("prefix", ["/photo/", "/thumb/", "/api/photo/"])
def test_only_library_photos_by_integer_id(client, served_library, prefix):
    base, db, pics, ids = served_library
    secret = SECRET.encode()
    for raw in NOT_PHOTOS + [str(ids["broken.jpg"])]:
        r = client.get(prefix + raw)
        if raw == "..":  # the HTTP client itself resolves the dot segment: "/photo/.." → "/" (the page)
            assert r.status_code == 404 or "<title>imgsearch</title>" in r.text
            continue
        assert r.status_code == 404 or (raw == "1?x" and r.status_code == 200), (prefix, raw, r.status_code)
        assert secret not in r.content and b"root:" not in r.content
    for path in ("/photo/../outside/secret.txt", "/static/../app.py", "/static/%2e%2e/app.py",
                 "/static/..%2F..%2Fapp.py", "/static/%2e%2e%2f%2e%2e%2fstore%2fdb.py", "/etc/passwd",
                 f"/photo/{ids['red_circle.jpg']}/../../outside/secret.txt", "/thumbs/", "/photo/", "/thumb"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert b"import" not in r.content and secret not in r.content


def _fs_library(base: Path):
    """pics/a.jpg, pics/b.jpg, pics/linked -> ../elsewhere (elsewhere/c.jpg), indexed."""
    pics, elsewhere, outside = base / "pics", base / "elsewhere", base / "outside"
    make_photo(pics / "a.jpg", "red_circle", (160, 120))
    make_photo(pics / "b.jpg", "blue_square", (160, 120))
    make_photo(elsewhere / "c.jpg", "sky", (160, 120))
    (pics / "linked").symlink_to(elsewhere, target_is_directory=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    make_photo(outside / "private.jpg", "noise", (200, 150))
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **KW)
    import sqlite3

    with sqlite3.connect(db) as c:
        ids = {os.path.relpath(p, pics): i for i, p in c.execute("SELECT id, path FROM photos")}
    return db, pics, outside, ids


def test_symlinks_out_of_the_library_are_refused(tmp_path):
    db, pics, outside, ids = _fs_library(tmp_path)
    assert set(ids) == {"a.jpg", "b.jpg", "linked/c.jpg"}
    with Library(db, create=False) as lib, TestClient(create_app(lib), base_url=BASE) as c:
        # a photo indexed through a symlinked folder is served (its target is the indexed file)
        r = c.get(f"/photo/{ids['linked/c.jpg']}")
        assert r.status_code == 200 and r.content == (tmp_path / "elsewhere" / "c.jpg").read_bytes()
        # photos swapped for symlinks to files outside the library after indexing
        (pics / "a.jpg").unlink()
        (pics / "a.jpg").symlink_to(outside / "private.jpg")
        (pics / "b.jpg").unlink()
        (pics / "b.jpg").symlink_to(outside / "secret.txt")
        for pid in (ids["a.jpg"], ids["b.jpg"]):
            for prefix in ("/photo/", "/thumb/"):
                r = c.get(f"{prefix}{pid}")
                assert r.status_code == 404, (prefix, pid)
                assert SECRET.encode() not in r.content and r.content != (outside / "private.jpg").read_bytes()
        # the symlinked folder now points outside: its photo is refused too
        (pics / "linked").unlink()
        shutil.copy(outside / "private.jpg", outside / "c.jpg")
        (pics / "linked").symlink_to(outside, target_is_directory=True)
        assert c.get(f"/photo/{ids['linked/c.jpg']}").status_code == 404
        assert c.get(f"/thumb/{ids['linked/c.jpg']}").status_code == 404
        # a deleted photo is not served either
        (pics / "a.jpg").unlink()
        assert c.get(f"/photo/{ids['a.jpg']}").status_code == 404


def test_moved_photo_keeps_its_thumbnail(tmp_path):
    pics = tmp_path / "pics"
    make_photo(pics / "one.jpg", "green_triangle", (160, 120))
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **KW)
        with TestClient(create_app(lib), base_url=BASE) as c:
            first = c.get("/thumb/1")
            assert first.status_code == 200
            thumbs = list((db.parent / "thumbs").iterdir())
            assert len(thumbs) == 1 and re.fullmatch(r"[0-9a-f]{64}\.jpg", thumbs[0].name)
            stamp = thumbs[0].stat().st_mtime_ns
            (pics / "moved").mkdir()
            (pics / "one.jpg").rename(pics / "moved" / "renamed.jpg")
            report = lib.index([pics], **KW)
            assert report.moved == 1
            new_id = c.get("/api/search", params={"q": "anything", "mode": "dense"}).json()["results"][0]["id"]
            again = c.get(f"/thumb/{new_id}")
            assert again.status_code == 200 and again.content == first.content
            assert again.headers["etag"] == first.headers["etag"]
            assert list((db.parent / "thumbs").iterdir()) == thumbs and thumbs[0].stat().st_mtime_ns == stamp


# ---------------------------------------------------------------------------- serve_command + a real server

def test_loopback_detection():
    for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"):
        assert is_loopback(h) and host_warning(h) is None, h
    for h in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        assert not is_loopback(h) and "warning" in host_warning(h), h


def test_serve_command_binds_loopback_by_default(served_library, monkeypatch, capsys):
    import uvicorn

    base, db, pics, ids = served_library
    seen = {}

    def fake_run(self, sockets=None):
        seen["addr"] = sockets[0].getsockname()
        seen["app"] = self.config.app

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    serve_command(db, port=0, workers=1)   # (this process: several workers are tests/test_serve_workers.py)
    assert seen["addr"][0] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err
    serve_command(db, host="0.0.0.0", port=0, workers=1)
    assert seen["addr"][0] == "0.0.0.0"
    err = capsys.readouterr().err
    assert "warning" in err and "0.0.0.0" in err
    # beyond loopback any Host is accepted (the user asked for it); by default only loopback names
    with TestClient(seen["app"], base_url="http://192.168.1.10:8765") as c:
        assert c.get("/api/info").status_code == 200


def test_serve_command_errors_are_library_errors(tmp_path):
    from imgsearch.library import LibraryError

    with pytest.raises(LibraryError, match="no library"):
        serve_command(tmp_path / "nothing.db", port=0)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    db = tmp_path / "library.db"
    Library(db).close()
    try:
        with pytest.raises(LibraryError, match="cannot listen"):
            serve_command(db, port=busy.getsockname()[1], workers=1)
    finally:
        busy.close()


def raw_get(port: int, target: bytes) -> tuple[int, bytes]:
    """Send a request line byte for byte (no client-side normalisation of ``..`` or %-escapes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def test_raw_paths_on_a_real_server(served_library, live_server):
    base, db, pics, ids = served_library
    assert raw_get(live_server.port, f"/photo/{ids['red_circle.jpg']}".encode())[0] == 200
    for target in (b"/photo/../outside/secret.txt", b"/photo/..%2F..%2Foutside%2Fsecret.txt",
                   b"/thumb/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt", b"/photo/%2e%2e", b"/photo/1/../../../etc/passwd",
                   b"/static/../../outside/secret.txt", b"/static/%2e%2e/%2e%2e/outside/secret.txt",
                   b"/static/..%2f..%2fserve%2fapp.py", b"/photo/" + str(pics / "red_circle.jpg").encode(),
                   b"/photo//etc/passwd", b"/photo/%ED%A0%80", b"/photo/1%00", b"/thumb/\xff\xfe"):
        status, data = raw_get(live_server.port, target)
        assert status in (400, 404), (target, status)
        assert SECRET.encode() not in data and b"root:" not in data
    status, data = raw_get(live_server.port, b"/api/search?q=%ED%A0%80%ED%B0%80red")  # lone surrogates
    assert status in (200, 400), data[:300]
    status, data = raw_get(live_server.port, b"/api/search?q=" + b"a" * 10_000)
    assert status == 400 and b"too long" in data


# ---------------------------------------------------------------------------- `imgsearch serve`

def test_cli_serve_options(served_library, monkeypatch):
    """`imgsearch serve` passes --db/--host/--port through (skips until the command is registered)."""
    import uvicorn
    from typer.testing import CliRunner

    from imgsearch.cli import app as cli_app

    if "serve" not in {c.name or c.callback.__name__ for c in cli_app.registered_commands}:
        pytest.skip("`serve` is not registered in imgsearch/cli.py yet")
    base, db, pics, ids = served_library
    seen = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(sockets[0].getsockname()))
    runner = CliRunner()
    r = runner.invoke(cli_app, ["serve", "--db", str(db), "--port", "0", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert seen[-1][0] == "127.0.0.1" and "warning" not in r.output
    r = runner.invoke(cli_app, ["serve", "--db", str(db), "--host", "0.0.0.0", "--port", "0", "--workers", "1"])
    assert r.exit_code == 0 and seen[-1][0] == "0.0.0.0" and "warning" in r.output, r.output
    r = runner.invoke(cli_app, ["serve", "--db", str(base / "missing.db")])
    assert r.exit_code == 1 and "no library" in r.output and "Traceback" not in r.output


def test_cli_serve_real_process(served_library):
    """The real command in a subprocess: listens on 127.0.0.1, answers, stops cleanly on Ctrl-C."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    base, db, pics, ids = served_library
    code = "import sys; from imgsearch.serve import serve_command; serve_command(sys.argv[1], port=0)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 180
        while not any("open http" in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        url = re.search(r"open (http://\S+)", "".join(lines)).group(1)
        assert url.startswith("http://127.0.0.1:"), url
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with opener.open(url + "api/search?q=red+circle&k=1", timeout=60) as resp:
            data = json.loads(resp.read())
        assert data["results"][0]["path"] == str(pics / "red_circle.jpg")
        assert data["took_ms"] < 5000  # warm: models and indexes were loaded at start-up
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not any("warning" in ln for ln in lines), lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
