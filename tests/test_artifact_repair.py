"""Cached model artifacts that verify but do not load (issue 13, defect 2).

Each ONNX file imgsearch keeps in its cache folder (the re-ranking scorer, the MiniLM graph, the image
encoder) is given garbage bytes with a *matching* ``.sha256`` sidecar — the damage the checksum cannot
see. A query must still be served (library API, CLI, ``/api/search``), and an index run must put the file
right again, from the source weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.artifacts import read_verified, sidecar
from imgsearch.cli import app
from imgsearch.model.encoder_onnx import OnnxImageEncoder
from imgsearch.model.encoder_onnx import onnx_path as encoder_path
from imgsearch.model.rerank import QueryScorer, scorer_path
from imgsearch.text import embed
from imgsearch.text.minilm_onnx import onnx_path as minilm_path
from libtools import make_set, tiny_captioner
from photos import make_photo

KW = dict(batch_size=4, workers=0, progress=False)
GARBAGE = b"this is not an ONNX graph\n" * 40
runner = CliRunner()


def damage(path: Path, vocab: str | None = None) -> None:
    """Garbage in ``path`` with a sidecar that matches it: the checksum passes, onnxruntime refuses it.
    ``vocab``: the scorer's ``.json`` beside it (as it was), so that only the graph is bad."""
    if vocab is not None:
        Path(f"{path}.json").write_text(vocab)
    path.write_bytes(GARBAGE)
    sidecar(path).write_text(hashlib.sha256(GARBAGE).hexdigest() + "\n")
    assert read_verified(path) == path
    with pytest.raises(Exception):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def loads(path: Path) -> bool:
    """The cached file verifies and onnxruntime opens it."""
    if read_verified(path) != path:
        return False
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return True


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A small library indexed by the tiny captioner with its own cache folder (all three artifacts made),
    opened the way a query process opens it: ``Models`` names the tiny checkpoint's version without loading
    it, and loading "the checkpoint" gives a copy of the tiny captioner that has not opened its ONNX encoder."""
    from imgsearch.model.captioner import Captioner
    from imgsearch.models import Models

    cache = tmp_path / "cache"
    monkeypatch.setenv("IMGSEARCH_CACHE", str(cache))
    monkeypatch.setattr(embed, "_CACHE", {})            # MiniLM opened again from this cache folder
    tiny = tiny_captioner(0)
    loaded = []

    def load(cls, path=None, device="auto"):
        cap = dataclasses.replace(tiny, _onnx_encoder=None)
        loaded.append(cap)
        return cap

    monkeypatch.setattr(Captioner, "load", classmethod(load))
    monkeypatch.setattr(Models, "version", lambda self: tiny.version)
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "blue_square", "green_triangle", "sky"], "p")
    db = tmp_path / "lib" / "library.db"
    with Library(db) as lib:
        assert lib.index(pics, **KW).added == 4
    paths = {"scorer": scorer_path(tiny.version, cache), "minilm": minilm_path(cache),
             "encoder": encoder_path(tiny.encoder, cache)}
    for p in paths.values():
        assert loads(p), p
    return dict(db=db, pics=pics, paths=paths, loaded=loaded, tiny=tiny, tmp=tmp_path)


def fresh_process(monkeypatch) -> None:
    """What a new process would have: no MiniLM opened yet."""
    monkeypatch.setattr(embed, "_CACHE", {})


def api_query(db: Path, **kw):
    with Library(db) as lib:
        hits = lib.query("a red circle", k=4, **kw)
        plain = lib.query("a red circle", k=4, rerank=False, **kw)
        return hits, plain, lib.models.captioner_loaded


def cli_query(db: Path) -> list[dict]:
    r = runner.invoke(app, ["query", "a red circle", "--db", str(db), "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    return json.loads(r.stdout)


def web_query(db: Path) -> dict:
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    lib = Library(db, create=False)
    try:
        with TestClient(create_app(lib), base_url="http://127.0.0.1:8765") as c:
            r = c.get("/api/search", params={"q": "a red circle", "k": 4})
        assert r.status_code == 200, r.text
        return r.json()
    finally:
        lib.close()


def test_an_unloadable_scorer_costs_the_query_its_reranking_only(env, monkeypatch, caplog):
    db, scorer = env["db"], env["paths"]["scorer"]
    vocab = Path(f"{scorer}.json").read_text()
    caplog.set_level(logging.WARNING)

    damage(scorer, vocab)
    hits, plain, captioner_loaded = api_query(db)
    assert hits and [h.path for h in hits] == [h.path for h in plain]   # served, in the fused order
    assert not captioner_loaded                    # no torch export in a query process
    assert not scorer.exists() and not sidecar(scorer).exists()        # the damaged file is gone
    assert any("does not load" in r.getMessage() and str(scorer) in r.getMessage() for r in caplog.records)

    damage(scorer, vocab)
    assert cli_query(db)
    assert not scorer.exists()

    damage(scorer, vocab)
    pytest.importorskip("fastapi")
    body = web_query(db)
    assert body["count"] > 0 and body["results"]
    assert not scorer.exists()

    # the next index run that loads the captioner exports it again; queries re-rank with it
    damage(scorer, vocab)
    make_photo(env["pics"] / "new_checker.jpg", kind="checker", size=(320, 240))
    with Library(db) as lib:
        assert lib.index(env["pics"], **KW).added == 1
    assert loads(scorer)
    assert QueryScorer.load(env["tiny"].version) is not None
    with Library(db) as lib:
        assert lib.engine.scorer() is not None and not lib.models.captioner_loaded


def test_an_unloadable_minilm_graph_is_rebuilt_by_query_and_index(env, monkeypatch):
    db, minilm = env["db"], env["paths"]["minilm"]
    for query in (lambda: api_query(db)[0], lambda: cli_query(db), lambda: web_query(db)["results"]):
        damage(minilm)
        fresh_process(monkeypatch)
        assert query()
        assert loads(minilm)                        # rebuilt from the MiniLM weights (no torch needed)

    damage(minilm)
    fresh_process(monkeypatch)
    make_photo(env["pics"] / "new_checker.jpg", kind="checker", size=(320, 240))
    with Library(db) as lib:
        rep = lib.index(env["pics"], **KW)
    assert (rep.added, rep.failed) == (1, 0)
    assert loads(minilm)


def test_an_unloadable_encoder_graph_is_exported_again(env, monkeypatch, caplog):
    db, encoder = env["db"], env["paths"]["encoder"]
    caplog.set_level(logging.WARNING)

    damage(encoder)
    assert api_query(db)[0]                          # text queries do not need the encoder
    outside = make_photo(env["tmp"] / "elsewhere" / "stripes.jpg", kind="stripes", size=(320, 240))
    with Library(db) as lib:                         # a query "like" a photo that is not indexed does
        assert lib.query(like=outside, k=3)
    assert loads(encoder)
    assert isinstance(env["loaded"][-1]._onnx_encoder, OnnxImageEncoder)

    damage(encoder)
    make_photo(env["pics"] / "new_checker.jpg", kind="checker", size=(320, 240))
    with Library(db) as lib:
        rep = lib.index(env["pics"], **KW)
    assert (rep.added, rep.failed) == (1, 0)
    assert loads(encoder)
    assert isinstance(env["loaded"][-1]._onnx_encoder, OnnxImageEncoder)   # ONNX Runtime, not the PyTorch fallback
    assert not any("using PyTorch" in r.getMessage() for r in caplog.records)


def test_a_cli_index_run_repairs_all_three(env, monkeypatch):
    db, paths = env["db"], env["paths"]
    vocab = Path(f"{paths['scorer']}.json").read_text()
    for name, p in paths.items():
        damage(p, vocab if name == "scorer" else None)
    fresh_process(monkeypatch)
    make_photo(env["pics"] / "new_checker.jpg", kind="checker", size=(320, 240))
    r = runner.invoke(app, ["index", str(env["pics"]), "--db", str(db), "--workers", "0", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["added"], rep["failed"]) == (1, 0)
    for name, p in paths.items():
        assert loads(p), name
    assert cli_query(db)
