"""imgsearch index --engine ray (imgsearch/cluster/): a real local Ray instance, the tiny captioner.

Ray starts once for the module (``ray.init(num_cpus=2, num_gpus=1)``: the declared GPU lets the captioning actor
schedule on a CPU box; never num_cpus=1, the pipeline hangs, Ray #44687). Every test runs under a timeout so a
hang fails instead of blocking CI. Skipped, with the reason, where Ray cannot be imported (pip install
'imgsearch[ray]').
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'imgsearch[ray]' to run the Ray tests")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (it comes with imgsearch[ray])")
import pyarrow as pa                                # noqa: E402

from typer.testing import CliRunner               # noqa: E402

from imgsearch import Library                       # noqa: E402
from imgsearch.cli import app                       # noqa: E402
from imgsearch.cluster import run as cluster_run  # noqa: E402
from imgsearch.cluster import shards              # noqa: E402
from imgsearch.store import writes                # noqa: E402
from libtools import ROOT, alarm, make_set, rows, tiny_captioner  # noqa: E402

pytestmark = pytest.mark.ray
TIMEOUT_S = 240
KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker", "red_circle"]


@pytest.fixture(autouse=True)
def _timeout():
    """A hung Ray pipeline fails the test (SIGALRM) instead of blocking the suite."""
    with alarm(TIMEOUT_S, "Ray test (a hung pipeline?)"):
        yield


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    """(photos folder, checkpoint, reference db): make_photos."""
    return make_photos(tmp_path_factory.mktemp("rayidx"))


def make_photos(base: Path) -> tuple[Path, Path, Path]:
    """(photos folder, checkpoint, reference db) under ``base``: 9 drawn photos (one a copy of another) + one bad
    file, the tiny captioner saved as a checkpoint, and the library the plain ``index`` makes of them."""
    pics = base / "pics"
    make_set(pics, KINDS[:6])
    make_set(pics / "sub", KINDS[6:], prefix="s")
    (pics / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ckpt = tiny_captioner(0).save(base / "tiny.pt")
    ref = base / "ref" / "library.db"
    with Library(ref, model=ckpt, device="cpu") as lib:
        lib.index([pics], workers=0)
    return pics, ckpt, ref


def snapshot(db: Path) -> dict:
    """Everything a user sees of a library, by path: error, best caption, model version, captions, terms, vectors."""
    out = {}
    for path, pid, err, cap, ver, h, w, ht, *vecs in rows(db, "SELECT path, id, error, caption, model_version, "
                                                        "content_hash, width, height, caption_embedding, "
                                                        "image_embedding, label_embedding, visual_embedding, labels "
                                                        "FROM photos ORDER BY path"):
        caps = rows(db, "SELECT rank, text, score FROM captions WHERE photo_id = ? ORDER BY rank", (pid,))
        terms = rows(db, "SELECT kind, term, score FROM tags WHERE photo_id = ? ORDER BY kind, term", (pid,))
        cells = rows(db, "SELECT length(data) FROM photo_cells WHERE photo_id = ?", (pid,))
        out[path] = {"error": err, "caption": cap, "version": ver, "hash": h, "size": (w, ht), "captions": caps,
                     "terms": terms, "cells": cells, "labels": vecs[4],
                     "vectors": [None if v is None else np.frombuffer(v, "<f4") for v in vecs[:4]]}
    return out


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for path in a:
        x, y = a[path], b[path]
        for k in ("error", "caption", "version", "hash", "size", "cells", "labels"):
            assert x[k] == y[k], (path, k, x[k], y[k])
        for k in ("captions", "terms"):   # the same rows; scores within 1e-4 (batches of other photos: float noise)
            assert [r[:2] for r in x[k]] == [r[:2] for r in y[k]], (path, k, x[k], y[k])
            np.testing.assert_allclose([r[2] for r in x[k]], [r[2] for r in y[k]], atol=1e-4, err_msg=f"{path} {k}")
        for u, v in zip(x["vectors"], y["vectors"]):
            assert (u is None) == (v is None), path
            if u is not None:
                np.testing.assert_allclose(u, v, atol=1e-5)


def ray_index(db: Path, pics: Path, ckpt: Path, out: Path, **kw):
    with Library(db, model=ckpt, device="cpu") as lib:
        return lib.index([pics], engine="ray", out=out, **kw)


@pytest.fixture(scope="module")
def ray_run(setup, tmp_path_factory):
    """(db, run folder, report): one ``index --engine ray`` of the photos (a Ray job, then the ingest), shared by the
    module's tests (each Ray job costs ~15 s on 2 cores); tests that change the run folder copy it first."""
    pics, ckpt, _ = setup
    base = tmp_path_factory.mktemp("rayrun")
    db = base / "lib" / "library.db"
    return db, base / "run", ray_index(db, pics, ckpt, base / "run")


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_ray_index_equals_the_plain_index(setup, ray_run):
    pics, ckpt, ref = setup
    db, run, rep = ray_run
    assert rep.planned == rep.submitted == 10 and rep.ingested and rep.not_ingested == 0 and rep.attempt
    assert rep.added == 9 and rep.failed == 1 and rep.errors[0][0].endswith("broken.jpg")   # a bad photo: its row
    assert rep.nodes and rep.nodes[0]["ray"] == ray.__version__
    assert_same(snapshot(db), snapshot(ref))
    # the shards: explicit Arrow types that any Parquet reader understands, one row per photo
    files = shards.shard_files(run)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 10
    schema = pq.read_schema(files[0])
    for name in ("caption_embedding", "image_embedding", "label_embedding", "visual_embedding"):
        assert schema.field(name).type == shards.VECTOR
    assert schema.field("cells").type == schema.field("labels").type == shards.SHARD_SCHEMA.field("cells").type
    # the workers made each described photo's terms and document (the ingest's bulk path uses them)
    table = pq.read_table(files, columns=["error", "terms", "document", "derived_version"]).to_pylist()
    assert [r["derived_version"] for r in table if r["error"] is None] == [writes.DERIVED_VERSION] * 9
    assert all(r["terms"] and r["document"] for r in table if r["error"] is None)
    # the search caches were brought up to date: a query finds the photos
    with Library(db, model=ckpt, device="cpu") as lib:
        assert lib.query("red circle", k=3, mode="dense")


@pytest.mark.parametrize("bulk", [False, True], ids=["row-by-row", "bulk"])
def test_ingest_twice_and_after_a_crash(setup, ray_run, tmp_path, bulk):
    pics, ckpt, ref = setup
    run = copy_run(ray_run[1], tmp_path / "run")
    db = tmp_path / "lib" / "library.db"

    def crash(done, total):
        if done > 0:
            raise KeyboardInterrupt("killed after the first transaction")

    with Library(db, model=ckpt, device="cpu") as lib:
        with pytest.raises(KeyboardInterrupt):
            # 3 rows a chunk: each row through IndexRunner._do_batch (the rules, row by row: bulk=False), or the
            # plainly new ones by bulk inserts, the others by the rules (bulk=True)
            cluster_run.ingest(lib, run, progress=crash, chunk=3, bulk=bulk)
    assert gc.isenabled()                                            # the ingest's pause (gcpause) is over
    n = rows(db, "SELECT count(*) FROM photos")[0][0]
    assert 0 < n < 10                                                 # half-way: whole transactions only
    with Library(db, model=ckpt, device="cpu") as lib:
        rep = lib.ingest(run)
    assert rep.added + rep.failed == 10 - n and rep.not_ingested == 0
    assert_same(snapshot(db), snapshot(ref))
    with Library(db, model=ckpt, device="cpu") as lib:
        rep = lib.ingest(run)                                         # twice: nothing changes
    assert rep.added == rep.updated == rep.failed == rep.removed == 0
    assert_same(snapshot(db), snapshot(ref))


def test_bulk_ingest_writes_what_the_row_by_row_rules_write(setup, ray_run, tmp_path):
    """The bulk inserts of new photos (ingest.bulk_rows, DB-API executemany, ids given by the ingest) write the very
    rows the rules write one photo at a time: every table, each photo's tags in their order, the BM25 documents,
    dates in the ORM's format."""
    _, ckpt, _ = setup
    run = ray_run[1]

    def dump(db: Path) -> dict:
        """Every row, photo ids as paths (the bulk inserts come first in a chunk: ids in another order)."""
        path = dict(rows(db, "SELECT id, path FROM photos"))
        cols = [r[1] for r in rows(db, "PRAGMA table_info(photos)")]
        at = cols.index("indexed_at")
        photos = rows(db, "SELECT * FROM photos")
        return {
            "photos": sorted(r[1:at] + r[at + 1:] for r in photos),
            "dates": sorted({len(r[at]) for r in photos}),                     # 'YYYY-MM-DD HH:MM:SS.ffffff'
            "captions": sorted((path[r[0]], *r[1:]) for r in rows(db, "SELECT * FROM captions")),
            "tags": sorted(((path[r[0]], *r[1:]) for r in rows(db, "SELECT * FROM tags ORDER BY photo_id, pos")),
                           key=lambda r: r[0]),                                 # stable: each photo's in rowid order
            "cells": sorted((path[r[0]], r[1]) for r in rows(db, "SELECT * FROM photo_cells")),
            "fts": sorted((path[r[0]], r[1]) for r in rows(db, "SELECT rowid, terms FROM photo_fts")),
            "seq": rows(db, "SELECT * FROM sqlite_sequence"), "meta": rows(db, "SELECT key FROM meta ORDER BY key")}

    got = []
    for bulk in (True, False):
        db = tmp_path / f"bulk{bulk}" / "library.db"
        with Library(db, model=ckpt, device="cpu") as lib:
            rep = cluster_run.ingest(lib, run, chunk=4, bulk=bulk)
        assert rep.added == 9 and rep.failed == 1
        got.append(dump(db))
    assert got[0]["dates"] == [26]
    for table in got[1]:
        assert got[0][table] == got[1][table], table


def test_resumed_run_submits_only_the_missing_photos(setup, ray_run, tmp_path):
    pics, ckpt, ref = setup
    run = copy_run(ray_run[1], tmp_path / "run")
    db = tmp_path / "lib" / "library.db"
    # a run killed half-way: only some shard rows were written (the shards cut to their first 4 rows)
    files = shards.shard_files(run)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    for f in files:
        f.unlink()
    pq.write_table(table.slice(0, 4), files[0])
    (run / "shards" / "killed-attempt").mkdir()
    (run / "shards" / "killed-attempt" / "half.parquet").write_bytes(b"PAR1 cut short")   # unreadable: skipped
    cmd = ["index", str(pics), "--engine", "ray", "--out", str(run), "--db", str(db), "--model", str(ckpt),
           "--device", "cpu", "--json"]
    r = CliRunner().invoke(app, cmd)                                   # the same command as the killed run
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)["cluster"]
    assert rep["planned"] == 10 and rep["submitted"] == 6 and rep["not_ingested"] == 0 and rep["ingested"]
    assert_same(snapshot(db), snapshot(ref))
    assert sum(pq.read_metadata(f).num_rows for f in shards.shard_files(run) if f.parent.name == rep["attempt"]) == 6
    # nothing left to do: the same command starts no Ray job and changes nothing
    r = CliRunner().invoke(app, cmd[:-1])
    assert r.exit_code == 0 and "Ray: 0 of 0 photo(s)" not in r.output, r.output
    assert_same(snapshot(db), snapshot(ref))
    rep = ray_index(db, pics, ckpt, run)
    assert rep.planned == 0 and rep.submitted == 0 and rep.attempt is None


@pytest.mark.parametrize("bulk", [False, True], ids=["row-by-row", "bulk"])
def test_a_row_made_for_the_file_as_it_was_before_is_not_ingested(setup, ray_run, tmp_path, bulk):
    """A shard row describes the file as it was when it was decoded (its size and mtime then, in the row's info):
    a file changed since (here: the row says another mtime) is left for the next run, never written with a stale
    description; the other photos are written as the plain index writes them."""
    pics, ckpt, ref = setup
    run = copy_run(ray_run[1], tmp_path / "run")
    db = tmp_path / "lib" / "library.db"
    files = shards.shard_files(run)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    paths = table.column("path").to_pylist()
    infos = table.column("info").to_pylist()
    stale = next(j for j, p in enumerate(paths) if p.endswith(".jpg") and infos[j] and "mtime_ns" in json.loads(infos[j]))
    info = json.loads(infos[stale])
    info["mtime_ns"] -= 10**9                                # decoded a second before the file's last change
    infos[stale] = json.dumps(info)
    table = table.set_column(table.schema.get_field_index("info"), "info", pa.array(infos, type=pa.string()))
    for f in files:
        f.unlink()
    pq.write_table(table, files[0])
    with Library(db, model=ckpt, device="cpu") as lib:
        rep = cluster_run.ingest(lib, run, bulk=bulk)
    assert rep.not_ingested == 1 and rep.added + rep.failed == 9
    want = snapshot(ref)
    del want[paths[stale]]
    assert_same(snapshot(db), want)


def test_cli_ingest_and_its_errors(setup, ray_run, tmp_path, monkeypatch):
    pics, ckpt, ref = setup
    run = copy_run(ray_run[1], tmp_path / "run")
    db = tmp_path / "lib" / "library.db"
    r = CliRunner().invoke(app, ["ingest", str(run), "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "added" in r.output
    assert_same(snapshot(db), snapshot(ref))
    r = CliRunner().invoke(app, ["ingest", str(tmp_path), "--db", str(db)])
    assert r.exit_code != 0 and "not a Ray run folder" in r.output
    r = CliRunner().invoke(app, ["index", str(pics), "--engine", "ray", "--db", str(db)])
    assert r.exit_code != 0 and "--out RUN_DIR" in r.output
    r = CliRunner().invoke(app, ["index", str(pics), "--out", str(run), "--db", str(db)])
    assert r.exit_code != 0 and "for --engine ray" in r.output
    monkeypatch.setitem(sys.modules, "ray", None)                    # where Ray is not installed: how to get it
    r = CliRunner().invoke(app, ["index", str(pics), "--engine", "ray", "--out", str(run), "--db", str(db)])
    assert r.exit_code != 0 and "pip install 'imgsearch[ray]'" in r.output


def test_node_check_names_a_missing_photo_folder(setup, tmp_path):
    from imgsearch.cluster import job
    from imgsearch.errors import UserError

    pics, _, _ = setup
    with pytest.raises(UserError, match="cannot see the photos"):
        job.check_nodes([str(tmp_path / "nowhere" / "a.jpg")], [])
    # a node that mounts the photos elsewhere: --path-map makes them visible
    facts = job.check_nodes([str(tmp_path / "nowhere" / "p0_red_circle.jpg")], job.parse_path_map([f"{tmp_path / 'nowhere'}={pics}"]))
    assert facts[0]["missing"] == []
    with pytest.raises(UserError, match="SRC=DST"):
        job.parse_path_map(["no-equals-sign"])


def test_default_install_and_queries_do_not_import_ray(setup):
    _, ckpt, ref = setup
    code = textwrap.dedent(f"""
        import sys
        import imgsearch
        from imgsearch import Library
        with Library({str(ref)!r}, model={str(ckpt)!r}) as lib:
            lib.query("red circle", k=3, mode="bm25")
        bad = [m for m in ("ray", "pyarrow") if m in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
