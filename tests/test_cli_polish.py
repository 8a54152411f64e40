"""What a new user asked of the CLI and the API (issue 14, polish): --version, shell completion, --paths / -0,
`caption` in a pipe, a reader that closes the pipe early, readable --help, --in FILE, one query length limit
for the CLI, the API and /api/search, k below 1, Hit.to_dict and the docstrings."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pydoc
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.cli import app
from imgsearch.errors import UserError
from imgsearch.hits import Hit
from imgsearch.limits import MAX_QUERY_CHARS
from libtools import make_set

runner = CliRunner()
IMGSEARCH = Path(sys.executable).parent / "imgsearch"   # the console script `pip install` made


def run(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def cli(*args, **kw) -> subprocess.CompletedProcess:
    """The real `imgsearch` command in a child process."""
    if not IMGSEARCH.exists():
        pytest.skip(f"no console script at {IMGSEARCH} (pip install -e . makes it)")
    return subprocess.run([str(IMGSEARCH), *map(str, args)], capture_output=True, timeout=120, **kw)




# ---------------------------------------------------------------------------- --version, completion

def test_version_prints_the_installed_version():
    r = run("--version")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"imgsearch {importlib.metadata.version('imgsearch')}"


def test_shell_completion_script_and_completing_a_command():
    # the shell is detected from the parent processes (typer: shellingham), so the command runs under bash here:
    # under the test runner alone, whose parents may be no shell at all (nohup, CI), it finds none and fails
    # ("; exit $?" keeps bash as the parent: bash -c would exec a lone command)
    if not shutil.which("bash") or not IMGSEARCH.exists():
        pytest.skip("needs bash and the console script (pip install -e . makes it)")
    shown = subprocess.run(["bash", "-c", f"'{IMGSEARCH}' --show-completion; exit $?"], capture_output=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _imgsearch_completion imgsearch" in shown.stdout.decode()
    assert "_IMGSEARCH_COMPLETE=complete_bash" in shown.stdout.decode()
    assert "--install-completion" in run("--help").stdout

    # what bash runs on TAB: the real command, told by the environment what is typed so far
    env = dict(os.environ, _IMGSEARCH_COMPLETE="complete_bash", COMP_WORDS="imgsearch que", COMP_CWORD="1")
    done = cli(env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["query"]
    env.update(COMP_WORDS="imgsearch query --no-r", COMP_CWORD="2")
    assert cli(env=env).stdout.decode().split() == ["--no-rerank"]


# ---------------------------------------------------------------------------- --help

def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


@pytest.mark.parametrize("width", [80, 120])
def test_help_has_no_type_noise_and_no_cut_defaults(width):
    helps = {"": run("--help", terminal_width=width).stdout}
    for name in _commands():
        r = run(name, "--help", terminal_width=width)
        assert r.exit_code == 0, (name, r.output)
        helps[name] = r.stdout
    for name, text in helps.items():
        for noise in ("<bool>", "<str>", "<int", "<float", "<path>", "<file>", "<dir>", "<list", "…"):
            assert noise not in text, (name, noise, text)
    q = " ".join(helps["query"].split())
    assert "-k, --k N" in q and "--in PATH" in q and "--mode MODE" in q and "--json Print JSON" in q
    assert "~/.local/share/imgsearch/library.db" in q and "$XDG_DATA_HOME/imgsearch/library.db" in q
    # "[default: X]" written in a help text is shown, not taken for rich markup and dropped
    train = " ".join(helps["train"].split())
    assert "[default: --images]" in train and "[default: OUT/features]" in train
    assert "[default: the whole library]" in " ".join(helps["prune"].split())


# ---------------------------------------------------------------------------- --paths / -0

def test_paths_and_nul_output_match_the_api(indexed_library):
    base, db = indexed_library
    with Library(db) as lib:
        want = [h.path for h in lib.query("a red circle", k=6)]
    assert len(want) >= 3 and all(os.path.isabs(p) for p in want)

    r = run("query", "a red circle", "--db", db, "-k", 6, "--paths")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == want and r.stdout.endswith("\n")

    r = run("query", "a red circle", "--db", db, "-k", 6, "-0")
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == b"".join(os.fsencode(p) + b"\0" for p in want)
    assert b"\n" not in r.stdout_bytes
    assert run("query", "a red circle", "--db", db, "-k", 6, "--null").stdout_bytes == r.stdout_bytes


def test_nul_output_keeps_any_name_whole(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle", "sky"], "p")
    odd = pics / "café \n\tline.jpg"          # a newline and a tab in the name: only -0 keeps it one record
    os.rename(pics / "p0_red_circle.jpg", odd)
    db = tmp_path / "lib"
    assert run("index", pics, "--db", db, "--workers", 0).exit_code == 0
    r = run("query", "a red circle", "--db", db, "-0", "--min-score", 0)
    assert r.exit_code == 0, r.output
    assert os.fsencode(odd) in r.stdout_bytes.split(b"\0")


def test_index_report_shows_a_name_that_is_not_utf8(tmp_path, tiny_model):
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    pics = tmp_path / "pics"
    make_set(pics, ["red_circle"], "p")
    (pics / os.fsdecode(b"caf\xe9.jpg")).write_bytes((pics / "p0_red_circle.jpg").read_bytes())
    r = run("index", pics, "--db", tmp_path / "lib", "--workers", 0)   # the table, not --json
    assert r.exit_code == 0, r.output
    assert "caf\ufffd.jpg" in r.stdout and "not valid UTF-8" in r.stdout


def test_duplicates_paths_and_nul_output(tmp_path, tiny_model):
    import shutil

    pics = tmp_path / "pics"
    a, b, c = make_set(pics, ["red_circle", "sky", "checker"], "p")
    shutil.copy(a, pics / "copy of a.jpg")
    shutil.copy(b, pics / "copy of b.jpg")
    db = tmp_path / "lib"
    assert run("index", pics, "--db", db, "--workers", 0, "--quiet").exit_code == 0
    with Library(db) as lib:
        groups = [g.paths for g in lib.duplicates()]
    assert sorted(map(sorted, groups)) == sorted([sorted([str(a), str(pics / "copy of a.jpg")]),
                                                  sorted([str(b), str(pics / "copy of b.jpg")])])

    r = run("duplicates", "--db", db, "--paths")
    assert r.exit_code == 0, r.output
    assert r.stdout == "".join("".join(p + "\n" for p in g) + "\n" for g in groups)   # fdupes' layout
    r = run("duplicates", "--db", db, "-0")
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == b"".join(b"".join(os.fsencode(p) + b"\0" for p in g) + b"\0" for g in groups)


# ---------------------------------------------------------------------------- caption in a pipe

def test_caption_in_a_pipe_prints_tsv_and_fails_for_a_bad_photo(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    good = make_set(pics, ["red_circle", "sky"], "p")
    (pics / "broken.jpg").write_bytes(b"not a photo")

    r = run("caption", pics, "--device", "cpu")   # CliRunner's stdout is not a terminal: a pipe
    assert r.exit_code == 1, r.output
    lines = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert [ln[0] for ln in lines] == [str(p) for p in good]
    assert all(len(ln) == 3 and ln[1] for ln in lines)
    assert "broken.jpg" not in r.stdout
    assert f"cannot caption {pics / 'broken.jpg'}" in r.stderr
    assert "could not caption 1 of 3 photos" in r.stderr and "Traceback" not in r.output

    js = run("caption", pics, "--device", "cpu", "--json")
    assert js.exit_code == 1
    assert [d["path"] for d in json.loads(js.stdout) if not d.get("error")] == [str(p) for p in good]

    ok = run("caption", *good, "--device", "cpu")
    assert ok.exit_code == 0 and len(ok.stdout.splitlines()) == 2 and ok.stderr == ""


# ---------------------------------------------------------------------------- a reader that leaves early

def test_query_into_a_closed_pipe_exits_0_quietly(indexed_library):
    base, db = indexed_library
    if not IMGSEARCH.exists():
        pytest.skip(f"no console script at {IMGSEARCH}")
    for extra in ([], ["--paths"], ["--json"]):
        # the reader is gone before a byte is written: every write fails with EPIPE
        p = subprocess.Popen([str(IMGSEARCH), "query", "a red circle", "--db", str(db), "-k", "8", *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 0, err
        assert err == "", err

    # and the shell pipeline a user types
    done = subprocess.run(["bash", "-c", f"set -o pipefail; '{IMGSEARCH}' query 'a red circle' --db '{db}' -k 8 "
                                         "| head -1"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.decode().splitlines()) == 1 and done.stderr == b""


# ---------------------------------------------------------------------------- --in FILE

def test_in_a_file_says_it_is_a_file(indexed_library):
    base, db = indexed_library
    photo = next((base / "A").glob("*.jpg"))
    r = run("query", "a red circle", "--db", db, "--in", photo)
    assert r.exit_code == 1
    assert r.stderr.strip() == (f"imgsearch: error: not a folder: {photo} is a file (the folder filter takes a "
                                "folder; to find photos like this one, use like=)")
    assert "no such folder" not in r.stderr
    with Library(db) as lib, pytest.raises(UserError, match="is a file"):
        lib.query("a red circle", in_folder=photo)
    r = run("query", "a red circle", "--db", db, "--in", base / "nowhere")
    assert r.exit_code == 1 and "no such folder" in r.stderr


# ---------------------------------------------------------------------------- one query length limit

def test_one_query_length_limit_for_api_cli_and_web(served_library):
    from fastapi.testclient import TestClient

    from imgsearch.serve import app as serve_app

    assert serve_app.MAX_QUERY_CHARS is MAX_QUERY_CHARS == 500
    base, db, pics, ids = served_library
    at_limit = ("dog " * 200)[:MAX_QUERY_CHARS]
    too_long = at_limit + "x"
    spaced = "dog    " * 100                     # 700 characters, 399 once the spaces collapse: allowed
    with Library(db, create=False) as lib:
        lib.query(at_limit, k=1)
        lib.query(spaced, k=1)
        with pytest.raises(UserError, match=f"query too long: 501 characters \\(at most {MAX_QUERY_CHARS}\\)"):
            lib.query(too_long)
        with pytest.raises(UserError, match="query too long"):
            lib.query("x" * 5000)

        r = run("query", too_long, "--db", db)
        assert r.exit_code == 1 and r.stdout == ""
        assert r.stderr == f"imgsearch: error: query too long: 501 characters (at most {MAX_QUERY_CHARS})\n"
        assert run("query", "x" * 5000, "--db", db).exit_code == 1
        assert run("query", at_limit, "--db", db, "--json").exit_code == 0

        with TestClient(serve_app.create_app(lib), base_url="http://127.0.0.1") as c:
            assert c.get("/api/info").json()["max_query_chars"] == MAX_QUERY_CHARS
            assert c.get("/api/search", params={"q": at_limit}).status_code == 200
            bad = c.get("/api/search", params={"q": too_long})
            assert bad.status_code == 400 and "query too long" in bad.json()["detail"]


# ---------------------------------------------------------------------------- k below 1

def test_k_below_one_is_an_error_everywhere(served_library):
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    base, db, pics, ids = served_library
    with Library(db, create=False) as lib:
        assert len(lib.query("dog", k=1, min_score=0)) == 1
        for k in (0, -3):
            with pytest.raises(UserError, match=f"k must be a whole number of at least 1, not {k}"):
                lib.query("dog", k=k)
        with pytest.raises(UserError, match="at least 1"):
            lib.query("dog", k=2.5)
        with pytest.raises(UserError, match="at least 1"):
            lib.query(like=ids[next(iter(ids))], k=0)
        for k in ("0", "-1"):
            r = run("query", "dog", "--db", db, "-k", k)
            assert r.exit_code == 1 and r.stdout == ""
            assert r.stderr == f"imgsearch: error: k must be a whole number of at least 1, not {int(k)}\n"
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            r = c.get("/api/search", params={"q": "dog", "k": 0})
            assert r.status_code == 400 and "k" in r.json()["detail"]


# ---------------------------------------------------------------------------- Hit.to_dict

def test_hit_to_dict_has_every_field_as_json_types(indexed_library):
    base, db = indexed_library
    with Library(db) as lib:
        hits = lib.query("a red circle", k=3)
    for h in hits:
        d = h.to_dict()
        assert list(d)[0] == "rank"
        assert set(d) == {f.name for f in dataclasses.fields(Hit)}
        assert json.loads(json.dumps(d)) == d
        assert Hit(**{k: v for k, v in d.items()}) == h      # nothing lost

    @dataclasses.dataclass
    class Placed(Hit):        # a field added later is serialised without touching to_dict
        place: Path | None = None
        near: tuple = ()

    h = Placed(path="/p/a.jpg", score=0.5, caption="a dog", keywords=["dog"], id=7, place=Path("/x/y"),
               near=(Path("/a"), 2))
    d = h.to_dict()
    assert d["place"] == "/x/y" and d["near"] == ["/a", 2]
    assert json.loads(json.dumps(d))["place"] == "/x/y"


# ---------------------------------------------------------------------------- docstrings

def test_help_of_library_query_and_init_say_what_a_user_needs():
    from imgsearch.search.settings import MODES

    text = pydoc.render_doc(Library.query, renderer=pydoc.plaintext)
    for mode in MODES:
        assert f"``{mode}``" in text, mode
    for needed in ("Scores", "cosine", "z-score", "in_folder", "after", "before", "min_score", "like",
                   "Raises", "UserError", "NotFoundError", "below 1", "MAX_QUERY_CHARS"):
        assert needed in text, needed
    init = Library.__init__.__doc__ or ""
    for needed in ("library.db", "create=False", "device", "read_only", "Raises", "StoreError"):
        assert needed in init, needed
    assert "to_dict" in (Hit.to_dict.__doc__ or "") or "JSON" in (Hit.to_dict.__doc__ or "")
