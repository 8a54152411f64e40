"""Issue 13, `imgsearch status`: the indexed roots with their photo counts and whether each is reachable, the
last run in words, and "indexing now" (not "interrupted") while another Library holds the index lock."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.cli import app
from imgsearch.cli_output import print_status
from libtools import make_set, tiny_captioner

KW = dict(batch_size=2, workers=0, progress=False)
OLD_KEYS = {"db_path", "photos", "failed", "model_versions", "model_version", "last_index", "last_run_interrupted",
            "revision", "schema", "size_bytes", "reranking"}


@pytest.fixture(scope="module")
def cap():
    return tiny_captioner(0)


def test_roots_with_counts_and_reachability(tmp_path, cap):
    a = make_set(tmp_path / "A", ["red_circle", "blue_square", "sky"], "a")
    make_set(tmp_path / "A" / "sub", ["stripes"], "s")
    make_set(tmp_path / "B", ["checker", "gradient"], "b")
    c = make_set(tmp_path / "C", ["marker", "green_triangle"], "c")
    single = make_set(tmp_path / "D", ["noise"], "d")[0]
    (tmp_path / "B" / "broken.jpg").write_bytes(b"nope")
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([tmp_path / "A", tmp_path / "B"], **KW)
        lib.index([tmp_path / "A" / "sub"], **KW)               # inside a root: part of it, not listed again
        lib.index([tmp_path / "C"], **KW)
        lib.index([single], **KW)                                # a single photo: counted as its folder
        st = lib.status()
        assert OLD_KEYS <= set(st)
        assert st["roots"] == [
            {"path": str(tmp_path / "A"), "photos": 4, "failed": 0, "reachable": True, "state": "ok"},
            {"path": str(tmp_path / "B"), "photos": 2, "failed": 1, "reachable": True, "state": "ok"},
            {"path": str(tmp_path / "C"), "photos": 2, "failed": 0, "reachable": True, "state": "ok"},
            {"path": str(tmp_path / "D"), "photos": 1, "failed": 0, "reachable": True, "state": "ok"},
        ]
        assert not st["index_running"] and not st["last_run_interrupted"]

        shutil.rmtree(tmp_path / "B")                            # deleted, or a share that is not mounted
        for p in c:                                              # an unmounted drive's empty mount point
            p.unlink()
        lib.forget([tmp_path / "D"])                             # forgotten: no longer listed
        roots = {r["path"]: r for r in lib.status()["roots"]}
        assert set(roots) == {str(tmp_path / "A"), str(tmp_path / "B"), str(tmp_path / "C")}
        assert (roots[str(tmp_path / "B")]["state"], roots[str(tmp_path / "B")]["reachable"]) == ("missing", False)
        assert (roots[str(tmp_path / "C")]["state"], roots[str(tmp_path / "C")]["reachable"]) == ("empty", False)
        assert roots[str(tmp_path / "A")]["photos"] == len(a) + 1

    res = CliRunner().invoke(app, ["status", "--db", str(db)], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert f"{tmp_path / 'B'}: 2 photos, 1 failed (not found" in text
    assert f"{tmp_path / 'C'}: 2 photos (empty folder now" in text
    assert "1 added, 0 updated, 0 moved, 0 removed, 0 failed" in text   # the last run, in words
    assert "+0" not in text and "!0" not in text
    res = CliRunner().invoke(app, ["status", "--db", str(db), "--json"])
    got = json.loads(res.stdout)
    assert OLD_KEYS | {"roots", "index_running"} <= set(got) and len(got["roots"]) == 3


def test_status_while_another_library_indexes(tmp_path, cap, capsys):
    make_set(tmp_path / "pics", ["red_circle", "blue_square", "sky", "stripes"], "p")
    db = tmp_path / "library.db"
    seen = []

    def peek(done, total):                                     # a second Library, as `imgsearch status` opens it
        with Library(db, create=False) as other:
            seen.append(other.status())

    with Library(db, captioner=cap) as lib:
        lib.index([tmp_path / "pics"], **dict(KW, progress=peek))
        mid = seen[len(seen) // 2]
        assert mid["index_running"] and not mid["last_run_interrupted"] and mid["running_since"]
        print_status(mid, None, errors_asked=False)
        out = " ".join(capsys.readouterr().out.split())
        assert "indexing now (running since" in out and "interrupted" not in out
        after = lib.status()
        assert not after["index_running"] and after["running_since"] is None
        assert after["last_index"]["added"] == 4


def test_an_interrupted_run_is_still_called_interrupted(tmp_path, cap, capsys):
    from imgsearch.store import writes

    make_set(tmp_path / "pics", ["red_circle"], "p")
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([tmp_path / "pics"], **KW)
        with lib.store.write() as s:                             # what a killed run leaves: no finished_at
            writes.start_run(s, writes.now(), [str(tmp_path / "pics")])
        st = lib.status()
        assert st["last_run_interrupted"] and not st["index_running"]
        print_status(st, None, errors_asked=False)
        assert "the latest run was interrupted" in capsys.readouterr().out
