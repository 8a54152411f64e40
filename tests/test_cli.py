"""The CLI: --json output parses and matches the API; user errors exit 1 with one line, no traceback."""
from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.cli import app
from libtools import make_set

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_index_query_status_json(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "blue_square", "sky"], "p")
    make_set(pics / "sub", ["checker", "stripes"], "s")
    (pics / "broken.jpg").write_bytes(b"nope")
    db = tmp_path / "lib" / "library.db"

    r = run("index", pics, "--db", db, "--workers", 0, "--batch-size", 2, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["added"], rep["failed"]) == (5, 1)
    assert rep["errors"] == [{"path": str(pics / "broken.jpg"), "reason": "not an image"}]

    r = run("index", pics, "--db", db, "--workers", 0, "--quiet")
    assert r.exit_code == 0 and r.stdout == ""
    r = run("index", pics, "--db", db, "--workers", 0)
    assert r.exit_code == 0 and "unchanged" in r.stdout

    r = run("query", "a red circle", "--db", db, "-k", 3, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    with Library(db) as lib:
        want = lib.query("a red circle", k=3)
    assert [(g["path"], g["caption"], g["keywords"]) for g in got] == [(h.path, h.caption, h.keywords) for h in want]
    assert [g["score"] for g in got] == pytest.approx([h.score for h in want])
    assert all(g["path"].startswith(str(pics)) for g in got)
    r = run("query", "a red circle", "--db", db, "-k", 5, "--json", "--no-rerank")
    assert r.exit_code == 0, r.output
    with Library(db) as lib:
        plain = lib.query("a red circle", k=5, rerank=False)
    assert [(g["path"], round(g["score"], 5)) for g in json.loads(r.stdout)] == [(h.path, round(h.score, 5)) for h in plain]

    r = run("query", "a red circle", "--db", db, "-k", 10, "--json", "--in", pics / "sub", "--mode", "bm25")
    assert r.exit_code == 0, r.output
    assert {g["path"] for g in json.loads(r.stdout)} <= {str(p) for p in (pics / "sub").iterdir()}

    r = run("query", "a red circle", "--db", db, "-k", 3)  # not a terminal: tab-separated lines
    assert r.exit_code == 0
    lines = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert [(int(a), b, c) for a, _, b, c in lines] == [(h.rank, h.path, h.caption) for h in want]

    r = run("status", "--db", db, "--json", "--errors")
    st = json.loads(r.stdout)
    assert (st["photos"], st["failed"]) == (5, 1)
    assert st["db_path"] == str(db) and st["size_bytes"] > 0
    assert st["errors"] == [{"path": str(pics / "broken.jpg"), "reason": "not an image"}]
    r = run("status", "--db", db, "--errors")
    assert r.exit_code == 0 and "broken.jpg" in r.stdout

    # --db may name the library's folder; $IMGSEARCH_DB works too
    assert json.loads(run("status", "--db", db.parent, "--json").stdout)["photos"] == 5
    r = runner.invoke(app, ["status", "--json"], env={"IMGSEARCH_DB": str(db)})
    assert json.loads(r.stdout)["photos"] == 5


@pytest.mark.parametrize("args, msg", [
    (["index", "{tmp}/missing", "--db", "{tmp}/l.db"], "no such folder"),
    (["query", "dog", "--db", "{tmp}/nothing.db"], "no library"),
    (["status", "--db", "{tmp}/junk.db"], "not an imgsearch library"),
    (["query", "dog", "--db", "{tmp}/other.db"], "not an imgsearch library"),
    (["query", "dog", "--db", "{tmp}/ok.db", "--mode", "fuzzy"], "mode must be"),
    (["query", "dog", "--db", "{tmp}/ok.db", "--in", "{tmp}/missing"], "no such folder"),
    (["index", "{tmp}", "--db", "{tmp}/l.db", "--device", "tpu"], "--device"),
])
def test_user_errors_exit_1(tmp_path, args, msg):
    (tmp_path / "junk.db").write_bytes(b"\x00garbage" * 64)
    with sqlite3.connect(tmp_path / "other.db") as c:
        c.execute("CREATE TABLE x (y)")
    Library(tmp_path / "ok.db").close()
    r = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 1, r.output
    assert msg in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


DEVICE_COMMANDS = {
    "caption": ["caption", "{tmp}/x.jpg"],
    "index": ["index", "{tmp}/pics", "--db", "{tmp}/l.db"],
    "train": ["train", "--captions", "{tmp}/caps.json", "--images", "{tmp}/pics", "--out", "{tmp}/run"],
    "evaluate": ["evaluate", "--captions", "{tmp}/caps.json", "--images", "{tmp}/pics"],
}


@pytest.mark.parametrize("command", list(DEVICE_COMMANDS))
@pytest.mark.parametrize("device, msg", [
    ("cuda", "CUDA is not available on this machine"),
    ("cuda:1", "CUDA is not available on this machine"),
    ("tpu", "--device must be auto, cpu, cuda or cuda:N"),
    ("cuda:x", "--device must be auto, cpu, cuda or cuda:N"),
])
def test_unusable_device_is_one_line_and_exit_1(tmp_path, monkeypatch, command, device, msg):
    """On a machine without CUDA (forced here, whatever this one has), asking for it — or for a device that
    does not exist — is one clear line on stderr and exit 1, before any work: no ValueError traceback."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "pics").mkdir()
    (tmp_path / "x.jpg").write_bytes(b"not looked at")
    (tmp_path / "caps.json").write_text('{"images": [], "annotations": []}')
    r = runner.invoke(app, [a.format(tmp=tmp_path) for a in DEVICE_COMMANDS[command]] + ["--device", device])
    assert r.exit_code == 1, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception   # the CLI exited; nothing escaped it
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgsearch: error: ") and msg in lines[0], r.stderr
    assert not (tmp_path / "l.db").exists() and not (tmp_path / "run").exists()


def test_index_draws_the_cli_progress_bar(tmp_path, tiny_model, monkeypatch):
    """`index` hands the CLI's progress_bar() callback to Library.index (not with --quiet or --json)."""
    import contextlib

    import imgsearch.cli.library_cmds as cli

    calls, opened = [], []

    @contextlib.contextmanager
    def fake_bar(label="indexing"):
        opened.append(label)
        yield lambda done, total: calls.append((done, total))

    monkeypatch.setattr(cli, "progress_bar", fake_bar)
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "blue_square", "sky"], "p")
    r = run("index", pics, "--db", tmp_path / "l.db", "--workers", 0, "--batch-size", 2)
    assert r.exit_code == 0, r.output
    assert opened == ["indexing"] and calls and calls[-1] == (3, 3)
    for quiet in ("--quiet", "--json"):
        make_set(pics / quiet.strip("-"), ["checker"], "q")
        assert run("index", pics, "--db", tmp_path / "l.db", "--workers", 0, quiet).exit_code == 0
    assert opened == ["indexing"]


def test_progress_bar_draws_on_a_terminal_only(monkeypatch):
    import io
    import sys

    from imgsearch.cli import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar() as update:
        assert update is None                        # piped stderr: nothing to draw
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with progress_bar() as update:
        update(0, 0)                                 # nothing to do yet: no bar
        assert term.getvalue() == ""
        for done in range(0, 5):
            update(done, 4)
    drawn = term.getvalue()
    assert "indexing" in drawn and "4/4" in drawn and "img/s" in drawn and "ETA" in drawn, drawn


def test_cli_module_does_not_import_torch():
    """`imgsearch query` start-up must not pay for torch (~2 s and hundreds of MB)."""
    import subprocess
    import sys

    code = "import sys; import imgsearch.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_query_min_score_and_nothing_found(tmp_path, tiny_model):
    """--min-score reaches Library.query (photos less relevant are cut; 0 cuts none); a query that matches
    nothing prints "no matching photos" on stderr (exit 0) and ``[]`` with --json."""
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "blue_square", "sky", "checker", "stripes"], "p")
    db = tmp_path / "library.db"
    assert run("index", pics, "--db", db, "--workers", 0, "--quiet").exit_code == 0
    with Library(db) as lib:
        every = lib.query("a red circle", k=5, mode="dense", min_score=0)
        bar = sorted(h.score for h in every)[2]                       # keeps the best 3 (cosines: the scores shown)
        want = lib.query("a red circle", k=5, mode="dense", min_score=bar)
    assert len(every) == 5 and len(want) == 3
    for args, expect in ((("--min-score", bar), want), (("--min-score", 0), every)):
        r = run("query", "a red circle", "--db", db, "-k", 5, "--mode", "dense", "--json", *args)
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert [(g["id"], g["rank"]) for g in got] == [(h.id, h.rank) for h in expect]
        assert set(got[0]) >= {"rank", "score", "path", "caption", "keywords", "tags", "id", "taken_at",
                               "date_source"}   # the same shape
    for mode in ("hybrid", "bm25", "dense", "image"):
        for q in ("the a of and is", "xqzvkj"):
            r = run("query", q, "--db", db, "--mode", mode, "--json")
            assert r.exit_code == 0 and json.loads(r.stdout) == [], (mode, q, r.output)
            r = run("query", q, "--db", db, "--mode", mode)
            assert r.exit_code == 0 and r.stdout == "" and "no matching photos" in r.stderr, (mode, q)
    r = run("query", "xqzvkj", "--db", db, "--mode", "dense", "--min-score", 0, "--json")
    assert len(json.loads(r.stdout)) == 5                             # no cut: the old behaviour
    r = run("query", "a red circle", "--db", db, "--min-score", "lots")
    assert r.exit_code != 0
