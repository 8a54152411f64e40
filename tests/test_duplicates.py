"""Duplicates: byte-identical copies are one hit (``Hit.copies``) in every mode and through the API, the CLI
and /api/search; `imgsearch duplicates` lists exact groups and, with --near, edited copies (resized, JPEG
quality 30, 5 % cropped, brightened) made here — and never groups distinct drawn photos."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageEnhance
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.cli import app
from imgsearch.search.duplicates import NEAR_THRESHOLD, near_groups
from imgsearch.search.settings import MODES
from libtools import rows, tiny_captioner

INDEX_KW = dict(batch_size=8, workers=0, progress=False)
Q = dict(mode="dense", min_score=0)            # the tiny captioner's captions: every photo comes back
EDITS = ("resize", "jpeg30", "crop5", "bright")
DISTINCT = 6                                   # scenes with no copy at all


def scene(seed: int, size=(640, 480)) -> Image.Image:
    """A drawn photo of its own: a two-colour background and seven shapes, colours and places from ``seed``."""
    rng = random.Random(seed)
    w, h = size
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    d.rectangle((0, rng.randint(h // 3, 2 * h // 3), w, h), fill=tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(7):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randint(30, 110)
        box = (x - r, y - r, x + r, y + r)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=colour)
    return im


def edited(im: Image.Image, how: str) -> tuple[Image.Image, int]:
    w, h = im.size
    if how == "resize":
        return im.resize((w // 2, h // 2), Image.LANCZOS), 90
    if how == "jpeg30":
        return im, 30
    if how == "crop5":
        return im.crop((round(w * 0.03), round(h * 0.02), round(w * 0.98), round(h * 0.97))), 90
    return ImageEnhance.Brightness(im).enhance(1.25), 90


@pytest.fixture(scope="module")
def lib_dir(tmp_path_factory):
    """(base, db, paths): ``pics/`` holds scenes 0-3 with their edited copies ``near/<edit>.jpg``, scenes
    10.. (distinct), and byte-identical copies: ``scene0.jpg`` once in ``copies/``, ``scene10.jpg`` twice
    (``copies/`` and ``copies/deeper/``)."""
    base = tmp_path_factory.mktemp("dups")
    pics = base / "pics"
    (pics / "near").mkdir(parents=True)
    paths: dict[str, Path] = {}
    for i, how in enumerate(EDITS):
        src = scene(i)
        paths[f"scene{i}"] = pics / f"scene{i}.jpg"
        src.save(paths[f"scene{i}"], quality=92)
        im, q = edited(src, how)
        paths[how] = pics / "near" / f"{how}.jpg"
        im.save(paths[how], quality=q)
    for j in range(DISTINCT):
        paths[f"scene{10 + j}"] = pics / f"scene{10 + j}.jpg"
        scene(10 + j).save(paths[f"scene{10 + j}"], quality=92)
    (pics / "copies" / "deeper").mkdir(parents=True)
    for name, where in (("copy0", "copies/scene0 copy.jpg"), ("copy10", "copies/scene10.jpg"),
                        ("copy10b", "copies/deeper/scene10 (2).jpg")):
        paths[name] = pics / where
        shutil.copyfile(paths["scene0" if name == "copy0" else "scene10"], paths[name])
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
    return base, db, {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def lib(lib_dir):
    with Library(lib_dir[1], create=False, captioner=tiny_captioner(0)) as library:
        yield library


CONTENTS = len(EDITS) * 2 + DISTINCT           # distinct file contents in the library


def test_byte_identical_copies_are_one_hit_in_every_mode(lib, lib_dir):
    _, _, p = lib_dir
    for mode in MODES:
        hits = lib.query("red circle", k=50, mode=mode, min_score=0)
        shown = [h.path for h in hits] + [c for h in hits for c in h.copies]
        assert len(shown) == len(set(shown)), mode                  # no photo twice, as a hit or a copy
        assert p["copy0"] not in [h.path for h in hits] or p["scene0"] not in [h.path for h in hits], mode
        if mode == "dense":                                         # every photo comes back: all contents
            assert len(hits) == CONTENTS
            assert len(shown) == CONTENTS + 3
    by_path = {h.path: h for h in lib.query("red circle", k=50, **Q)}
    first0 = by_path.get(p["copy0"]) or by_path[p["scene0"]]
    assert first0.path == by_id(lib_dir[1], p["copy0"], p["scene0"])[0]     # the copy indexed first is the hit
    assert sorted([first0.path, *first0.copies]) == sorted([p["copy0"], p["scene0"]])
    first10 = next(h for h in by_path.values() if p["scene10"] in [h.path, *h.copies])
    assert sorted([first10.path, *first10.copies]) == sorted([p["scene10"], p["copy10"], p["copy10b"]])
    assert first10.to_dict()["copies"] == first10.copies and len(first10.copies) == 2
    from imgsearch.cli_output import copies_note

    assert copies_note(first10) == " (+2 copies)" and copies_note(first0) == " (+1 copy)"
    alone = by_path[p["scene1"]]
    assert alone.copies == [] and alone.to_dict()["copies"] == [] and copies_note(alone) == ""


def test_collapsing_keeps_the_ranking_prefix_stable_and_k_distinct(lib):
    full = lib.query("red circle", k=CONTENTS, **Q)
    assert len(full) == CONTENTS                                  # k distinct photos when there are enough
    assert sum(1 + len(h.copies) for h in full) == CONTENTS + 3   # ... which, with their copies, are all the files
    assert [h.rank for h in full] == list(range(1, CONTENTS + 1))
    for k in range(1, CONTENTS):
        assert [(h.path, h.copies) for h in lib.query("red circle", k=k, **Q)] == \
            [(h.path, h.copies) for h in full[:k]], k
    for mode in ("bm25", "hybrid"):
        big = lib.query("red circle", k=50, mode=mode, min_score=0)
        for k in (1, 2, 3, 5):
            assert [h.path for h in lib.query("red circle", k=k, mode=mode, min_score=0)] == \
                [h.path for h in big[:k]], (mode, k)


def test_the_hit_is_the_copy_under_the_asked_folder(lib, lib_dir):
    base, _, p = lib_dir
    hits = lib.query("red circle", k=50, in_folder=Path(p["copy10b"]).parent, **Q)
    assert [(h.path, sorted(h.copies)) for h in hits] == [(p["copy10b"], sorted([p["scene10"], p["copy10"]]))]
    hits = lib.query("red circle", k=50, in_folder=base / "pics" / "copies", **Q)
    assert len(hits) == 2 and {h.path for h in hits} <= {p["copy0"], p["copy10"], p["copy10b"]}
    like = lib.query(like=p["scene10"], k=3)                       # query by example folds them too
    assert p["scene10"] in [like[0].path, *like[0].copies] and len(like[0].copies) == 2


def test_copies_whose_file_is_gone_are_not_listed(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    scene(5).save(pics / "a.jpg", quality=90)
    for name in ("b.jpg", "c.jpg"):
        shutil.copyfile(pics / "a.jpg", pics / name)
    scene(6).save(pics / "other.jpg", quality=90)
    with Library(tmp_path / "lib" / "library.db", captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
        hits = lib.query("red circle", k=10, **Q)
        assert len(hits) == 2
        (pics / "c.jpg").unlink()
        got = {h.path: h.copies for h in lib.query("red circle", k=10, **Q)}
        assert got[str(pics / "a.jpg")] == [str(pics / "b.jpg")]
        (pics / "a.jpg").unlink()                                 # the first copy gone: the next one is the hit
        got = {h.path: h.copies for h in lib.query("red circle", k=10, **Q)}
        assert got == {str(pics / "b.jpg"): [], str(pics / "other.jpg"): []}
        assert [g.paths for g in lib.duplicates()] == []


def by_id(db, *paths) -> list[str]:
    """``paths`` in the order the library indexed them (photo id)."""
    order = [r[0] for r in rows(db, "SELECT path FROM photos ORDER BY id")]
    return sorted(paths, key=order.index)


def test_exact_groups(lib, lib_dir):
    _, db, p = lib_dir
    groups = lib.duplicates()
    assert [(g.kind, g.paths) for g in groups] == [                  # largest first; the one indexed first first
        ("exact", by_id(db, p["copy10"], p["copy10b"], p["scene10"])),
        ("exact", by_id(db, p["copy0"], p["scene0"])),
    ]
    assert all(ph.exact and ph.similarity == 1.0 for g in groups for ph in g.photos)
    assert [g.paths for g in lib.duplicates(folder=Path(p["copy10"]).parent)] == [by_id(db, p["copy10"], p["copy10b"])]
    with pytest.raises(Exception, match="near"):
        lib.duplicates(threshold=0.5)


def test_near_duplicates_made_here_are_found_and_distinct_photos_are_not(lib, lib_dir):
    _, _, p = lib_dir
    groups = lib.duplicates(near=True)
    of = {path: n for n, g in enumerate(groups) for path in g.paths}
    for i, how in enumerate(EDITS):
        assert p[how] in of and of[p[how]] == of.get(p[f"scene{i}"]), how          # found, with its photo
        g = groups[of[p[how]]]
        assert g.kind == "near" and g.photos[0].path != p[how] or how == "bright"    # the larger photo first
        edit = next(ph for ph in g.photos if ph.path == p[how])
        assert len(g.photos) == 2 + (i == 0)                    # scene0 also has its byte-identical copy
        assert edit is g.photos[0] or (edit.exact is False and NEAR_THRESHOLD <= edit.similarity < 1.0)
    # every group holds one scene and its own copies: distinct photos are never grouped
    for g in groups:
        scenes = {Path(x).name.split(" ")[0].removesuffix(".jpg") for x in g.paths if "/near/" not in x}
        assert len(scenes) == 1, g.paths
    assert sorted(groups[of[p["scene10"]]].paths) == sorted([p["scene10"], p["copy10"], p["copy10b"]])
    assert groups[of[p["scene10"]]].kind == "exact"
    for j in range(1, DISTINCT):
        assert p[f"scene{10 + j}"] not in of
    # a threshold of 1 keeps only identical looks (exact copies)
    assert {g.kind for g in lib.duplicates(near=True, threshold=1.0)} == {"exact"}
    # the layout check is what keeps these distinct scenes apart: their visual cosines reach the threshold
    loose = near_groups(lib.store, lib.caches, layout_threshold=-1.0)
    assert any(len({Path(x).name for x in g.paths if "/near/" not in x and "/copies/" not in x}) > 1 for g in loose)


def test_duplicates_command_and_json_query(lib_dir, monkeypatch):
    from imgsearch.model.captioner import Captioner

    cap = tiny_captioner(0)
    monkeypatch.setattr(Captioner, "load", classmethod(lambda cls, path=None, device="auto": cap))
    _, db, p = lib_dir
    runner = CliRunner()
    r = runner.invoke(app, ["duplicates", "--json", "--db", str(db)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [[ph["path"] for ph in g["photos"]] for g in out] == [by_id(db, p["copy10"], p["copy10b"], p["scene10"]),
                                                                 by_id(db, p["copy0"], p["scene0"])]
    assert out[0]["kind"] == "exact" and out[0]["count"] == 3
    r = runner.invoke(app, ["duplicates", "--near", "--json", "--db", str(db)])
    assert r.exit_code == 0, r.output
    near = json.loads(r.stdout)
    for i, how in enumerate(EDITS):
        assert any({p[how], p[f"scene{i}"]} <= {ph["path"] for ph in g["photos"]} and g["kind"] == "near"
                   for g in near), how
    r = runner.invoke(app, ["duplicates", "--db", str(db)])
    assert r.exit_code == 0 and "exact: 3 photos" in r.stdout and p["copy10b"] in r.stdout and "same file" in r.stdout
    r = runner.invoke(app, ["duplicates", "--in", str(Path(p["scene1"]).parent / "near"), "--db", str(db)])
    assert r.exit_code == 0 and r.stdout == "" and "no duplicates" in r.stderr
    r = runner.invoke(app, ["query", "red circle", "--mode", "dense", "--min-score", "0", "-k", "50", "--json",
                            "--db", str(db)])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert len(hits) == CONTENTS and sum(len(h["copies"]) for h in hits) == 3
    assert any(sorted([h["path"], *h["copies"]]) == sorted([p["scene10"], p["copy10"], p["copy10b"]]) for h in hits)


def test_api_search_lists_copies(lib, lib_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    _, _, p = lib_dir
    with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
        body = c.get("/api/search", params={"q": "red circle", "mode": "dense", "min_score": 0, "k": 50}).json()
        assert body["count"] == CONTENTS
        copies = {r["path"]: r["copies"] for r in body["results"]}
        hit0 = p["copy0"] if p["copy0"] in copies else p["scene0"]
        assert copies[hit0] == [p["scene0"] if hit0 == p["copy0"] else p["copy0"]]
        assert sum(len(v) for v in copies.values()) == 3
        # "more like this" of a copy leaves the photo out, also when another copy of it is the hit
        for name in ("scene10", "copy10", "copy10b"):
            pid = rows(lib_dir[1], "SELECT id FROM photos WHERE path = ?", (p[name],))[0][0]
            like = c.get("/api/search", params={"like": pid, "k": 50}).json()["results"]
            shown = {r["path"] for r in like} | {x for r in like for x in r["copies"]}
            assert not shown & {p["scene10"], p["copy10"], p["copy10b"]}, name
            assert len(like) == CONTENTS - 1


def _browser_missing() -> str | None:
    import os

    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not (os.path.exists("/usr/bin/chromedriver") or shutil.which("chromedriver")):
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        return "Chromium is not installed (apt-get install -y chromium)"
    return None


@pytest.mark.browser
def test_web_page_shows_the_copies_badge_and_lists_the_copies(lib, lib_dir, tmp_path):
    if _browser_missing():
        pytest.skip(_browser_missing())
    pytest.importorskip("fastapi")
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from imgsearch.serve.app import create_app
    from serve_library import LiveServer

    _, _, p = lib_dir
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                                if shutil.which(n))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver_path = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")

    def wait(cond, what):
        return WebDriverWait(drv, 30, poll_frequency=0.1).until(lambda d: cond(d), message=what)

    with LiveServer(create_app(lib)) as srv:
        drv = webdriver.Chrome(service=Service(driver_path), options=opts)
        try:
            drv.get(srv.url + "/?q=red+circle&mode=dense&min_score=0")
            wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == CONTENTS, "all cards")
            badges = {c.get_attribute("data-path"): c.find_element(By.CSS_SELECTOR, ".copies").text
                      for c in drv.find_elements(By.CSS_SELECTOR, "#grid .card")
                      if c.find_elements(By.CSS_SELECTOR, ".copies")}
            hit0 = p["copy0"] if p["copy0"] in badges else p["scene0"]
            hit10 = next(x for x in badges if x in (p["scene10"], p["copy10"], p["copy10b"]))
            assert badges == {hit0: "+1 copy", hit10: "+2 copies"}
            card = next(c for c in drv.find_elements(By.CSS_SELECTOR, "#grid .card")
                        if c.get_attribute("data-path") == hit10)
            drv.execute_script("arguments[0].click()", card.find_element(By.CSS_SELECTOR, ".copies"))
            wait(lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is not None, "viewer open")
            wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#viewer-copies li")) == 2, "copies listed")
            listed = sorted(li.text for li in drv.find_elements(By.CSS_SELECTOR, "#viewer-copies li"))
            assert listed == sorted({p["scene10"], p["copy10"], p["copy10b"]} - {hit10})
            assert drv.find_element(By.ID, "viewer-copies-label").is_displayed()
            drv.find_element(By.ID, "viewer-close").click()           # a photo without copies: no copies row
            alone = next(c for c in drv.find_elements(By.CSS_SELECTOR, "#grid .card")
                         if c.get_attribute("data-path") == p["scene1"])
            drv.execute_script("arguments[0].click()", alone.find_element(By.CSS_SELECTOR, ".thumb"))
            wait(lambda d: d.find_element(By.ID, "viewer-path").text == p["scene1"], "viewer of scene1")
            assert not drv.find_element(By.ID, "viewer-copies-label").is_displayed()
            assert drv.find_elements(By.CSS_SELECTOR, "#viewer-copies li") == []
        finally:
            drv.quit()
