"""The bulk path of ``imgsearch ingest`` (imgsearch/cluster/ingest.py): rows made in place from the shard columns,
the COMMIT on a thread of its own (cluster/bulk.py: BulkWriter), the WAL copied back by a checkpointer thread where
the ingest writes through the WAL (its rollback journal otherwise: tests/test_bulk_journal.py), and an ingest killed
(SIGKILL) half-way that a rerun completes with the very rows of an uninterrupted one.

No Ray instance is started (the ingest only reads Parquet shards), but ``Library.ingest`` wants the extra installed:
skipped with the reason where it is not (pip install 'imgsearch[ray]').
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'imgsearch[ray]' to run the ingest tests")
pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (it comes with imgsearch[ray])")
import pyarrow.parquet as pq                        # noqa: E402
from sqlalchemy import text                         # noqa: E402

from imgsearch import Library                       # noqa: E402
from imgsearch.cluster import bulk as cbulk       # noqa: E402
from imgsearch.cluster import plan as cplan       # noqa: E402
from imgsearch.cluster import shards              # noqa: E402
from imgsearch.cluster import run as cluster_run  # noqa: E402
from imgsearch.model.labels import LABELS_VERSION  # noqa: E402
from imgsearch.store import writes                # noqa: E402
from libtools import ROOT, alarm, check_consistent, rows  # noqa: E402

pytestmark = pytest.mark.ray
VERSION = "synthetic-000000000000+cells"
WORDS = "a dog cat man woman runs on the grass beach red blue ball water".split()


@pytest.fixture(autouse=True)
def _timeout():
    with alarm(120, "ingest test"):
        yield


def make_run(base: Path, n: int, per_file: int = 400, unlabelled: int = 0, derived: str | None = writes.DERIVED_VERSION,
             words: list[str] = WORDS, gps_every: int = 0) -> Path:
    """``n`` small distinct files (not decoded by the ingest: only stat'ed) and a run folder whose shards hold a
    described row for each (every ``unlabelled``-th without labels: as from a model without them; every
    ``gps_every``-th with a GPS position, so a place), with the terms and document a worker makes
    (writes.derived_rows) marked ``derived`` (None: left null, as in shards of older runs); returns the run
    folder."""
    rng = np.random.default_rng(0)
    pics, run = base / "pics", base / "run"
    (run / "shards" / "a").mkdir(parents=True)
    pics.mkdir()
    for k in range(0, n, per_file):
        m = min(per_file, n - k)
        cols: dict[str, list] = {f.name: [] for f in shards.SHARD_SCHEMA}
        for i in range(k, k + m):
            p = pics / f"p{i:05d}.jpg"
            p.write_bytes(b"\xff\xd8" + i.to_bytes(8, "little") * 4)
            st = p.stat()
            has_labels = not unlabelled or i % unlabelled != 0
            tags = [{"text": words[(i + t) % len(words)], "score": float(rng.random())} for t in range(4)]
            gps = [48.8566 + (i % 7) * 1e-4, 2.3522] if gps_every and i % gps_every == 0 else None
            row = {"path": str(p), "reason": "new", "photo_id": None, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                   "model_version": VERSION, "content_hash": f"{i:064x}", "error": None,
                   "info": json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "content_hash": f"{i:064x}",
                                       "width": 40, "height": 30, "taken_at": None, "gps": gps}),
                   "captions": [{"text": " ".join(rng.choice(words, 5)), "score": -float(c) - float(rng.random())}
                                for c in range(3)],
                   "tags": tags + tags[:1], "keywords": [t["text"] for t in tags[1:]],
                   "cells": rng.bytes(2000), "labels": rng.bytes(40) if has_labels else None,
                   "region_tags": tags[:2] if has_labels else None,
                   "labels_version": LABELS_VERSION if has_labels else None}
            for name in shards.VECTOR_COLUMNS:
                row[name] = (rng.standard_normal(shards.DIM).astype(np.float32).tolist()
                             if has_labels or name in ("caption_embedding", "image_embedding") else None)
            terms, document = writes.derived_rows(
                [c["text"] for c in row["captions"]], [(t["text"], t["score"]) for t in row["tags"]],
                row["keywords"], [(t["text"], t["score"]) for t in row["region_tags"] or ()])
            row.update(terms=terms if derived else None, document=document if derived else None,
                       derived_version=derived)
            for name, v in row.items():
                cols[name].append(v)
        pq.write_table(pa.table(cols, schema=shards.SHARD_SCHEMA), run / "shards" / "a" / f"{k:06d}.parquet")
    cplan.write_run(run, [str(pics)], VERSION, "")
    return run


def dump(db: Path) -> dict:
    """Every row the ingest writes, indexed_at left out (the time of the run)."""
    cols = [r[1] for r in rows(db, "PRAGMA table_info(photos)")]
    at = cols.index("indexed_at")
    return {"photos": [r[:at] + r[at + 1:] for r in rows(db, "SELECT * FROM photos ORDER BY id")],
            "captions": rows(db, "SELECT * FROM captions ORDER BY photo_id, rank"),
            "tags": rows(db, "SELECT * FROM tags ORDER BY photo_id, pos"),
            "terms": rows(db, "SELECT * FROM photo_terms ORDER BY photo_id"),     # the packed text itself
            "cells": rows(db, "SELECT * FROM photo_cells ORDER BY photo_id"),
            "fts": rows(db, "SELECT rowid, terms FROM photo_fts ORDER BY rowid"),
            "seq": rows(db, "SELECT * FROM sqlite_sequence")}


def test_bulk_rows_read_in_place_equal_the_rows_of_a_take(tmp_path):
    """bulk_rows(batch, rows=positions) — the candidates read where they are — gives the rows that bulk_rows of the
    batch cut to those positions (a copying take, the way it was made before) gives."""
    run = make_run(tmp_path, 6, unlabelled=3)
    batch = next(shards.iter_batches(run, 100))
    paths = batch.column("path").to_pylist()
    infos = [json.loads(i) for i in batch.column("info").to_pylist()]
    pick = [4, 0, 3]   # one without labels (0, 3), in another order than the batch's
    at, dialect = writes.now(), Library(tmp_path / "lib" / "library.db").store.engine.dialect
    args = ([paths[j] for j in pick], [infos[j] for j in pick], VERSION, at, dialect)
    got = cbulk.bulk_rows(batch, *args, rows=pick)
    took = cbulk.bulk_rows(batch.take(pa.array(pick, type=pa.int64())), *args)
    assert got.rows == pick and took.rows == [0, 1, 2]    # each photo's row in the batch it was made from
    took.rows = pick
    assert got == took
    assert got.subset([0, 2]).rows == [4, 3] and got.subset([0, 2]).paths_key() == hash((paths[4], paths[3]))
    assert [r[0] for r in got.photos] == [1, 2, 3] and got.photos[1][15] is None and got.photos[0][15] is not None
    assert len(got.captions) == 9 and [r[0] for r in got.terms] == [1, 2, 3]


def test_views_of_the_columns_hold_what_their_python_values_hold():
    """vector_views / binary_views (what the bulk inserts bind) hold the bytes that vector_bytes / to_pylist make,
    None where null, on sliced, chunked, dictionary-encoded and large_binary columns too; and SQLite stores a view
    as the BLOB of those bytes."""
    rng = np.random.default_rng(1)
    vecs = pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(7 * 384, dtype=np.float32)), 384)
    vecs = pa.array(vecs.to_pylist()[:3] + [None] + vecs.to_pylist()[4:], type=vecs.type)
    for col in (vecs, vecs.slice(2, 4)):
        views = shards.vector_views(col)
        assert [None if v is None else bytes(v) for v in views] == shards.vector_bytes(col)
        assert sum(v is None for v in views) == 1
    blobs = [rng.bytes(int(k)) for k in rng.integers(0, 50, 9)]
    blobs[4] = None
    for col in (pa.array(blobs, pa.binary()), pa.array(blobs, pa.binary()).slice(3, 5),
                pa.array(blobs, pa.large_binary()), pa.array(blobs, pa.binary()).dictionary_encode(),
                pa.chunked_array([pa.array(blobs[:4], pa.binary()), pa.array(blobs[4:], pa.binary())])):
        views = shards.binary_views(col)
        assert [None if v is None else bytes(v) for v in views] == col.to_pylist()
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (b BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", [(v,) for v in shards.vector_views(vecs)])
    assert [r[0] for r in con.execute("SELECT b FROM t")] == shards.vector_bytes(vecs)


def test_decode_infos_as_one_array_or_row_by_row():
    """A batch's decode infos decoded as one JSON array give what decoding each gives ({} where empty), also when
    a row would spill into the array (decoded one by one then); a row that is not JSON still fails."""
    from imgsearch.cluster.ingest import _decode_infos

    good = ['{"size": 3, "gps": null}', None, '{"a": [1, 2]}', ""]
    assert _decode_infos(good) == [{"size": 3, "gps": None}, {}, {"a": [1, 2]}, {}]
    sneaky = ['{"size": 1}, {"size": 2}', '{"size": 3}']   # one row, two objects: not one array element each
    with pytest.raises(ValueError):
        _decode_infos(sneaky)
    assert _decode_infos(['{"x": 1}', "5"]) == [{"x": 1}, 5]   # row by row, as before: the caller's checks judge
    with pytest.raises(ValueError):
        _decode_infos(['{"size": 1}', "{broken"])


NASTY = ["Café", "don't", "O\u2019Brien", "straße", "ＦＵＬＬ", "e\u0301te\u0301", "the", "dogs!", "ﬁsh", "日本",
         "new-york", "2024", "Zürich"]


def test_terms_made_by_the_workers_give_the_library_the_ingest_makes(tmp_path):
    """Shards whose rows carry the workers' packed terms and documents (writes.derived_rows) give the library that
    shards without them (an older run's: the ingest makes them) give: the same terms, tags and BM25 documents,
    places included (appended by the ingest); rows of another derived_version are made again, and so are rows
    that claim the current version but hold something else (checked on a batch's first row: a warning)."""
    words = WORDS + NASTY
    kw = dict(unlabelled=4, words=words, gps_every=5)
    dumps = {}
    for name, derived in (("made", writes.DERIVED_VERSION), ("older", None), ("other", "0+old-normalizer")):
        run = make_run(tmp_path / name, 300, per_file=100, derived=derived, **kw)
        if derived == "0+old-normalizer":        # what an older worker made: not to be used
            for f in shards.shard_files(run):
                t = pq.read_table(f)
                t = t.set_column(t.schema.get_field_index("document"), "document",
                                 pa.array(["stale"] * len(t), pa.string()))
                pq.write_table(t, f)
        db = tmp_path / name / "lib" / "library.db"
        with Library(db) as lib:
            assert lib.ingest(run).added == 300
        d = dump(db)
        d["photos"] = [r[:1] + r[3:4] + r[5:] for r in d["photos"]]     # not their paths, folders, mtimes
        dumps[name] = d
    assert dumps["made"]["photos"] and dumps["made"] == dumps["older"] == dumps["other"]
    fts = dict(dumps["made"]["fts"])
    assert sum("pari" in d.split() for d in fts.values()) == 60          # the places' terms are in (stemmed)
    assert any("cafe" in d.split() for d in fts.values()) and len(dumps["made"]["terms"]) == 300


def test_worker_made_rows_that_do_not_match_this_code_are_made_again(tmp_path, caplog):
    """Rows that say the current derived_version but hold other terms (a worker with other code under the same
    version): the batch's first one is checked, found to differ, and the batch is made here, with a warning."""
    run = make_run(tmp_path, 40, per_file=40, gps_every=3)
    batch = next(shards.iter_batches(run, 100))
    paths = batch.column("path").to_pylist()
    infos = [json.loads(i) for i in batch.column("info").to_pylist()]
    at, dialect = writes.now(), Library(tmp_path / "lib" / "library.db").store.engine.dialect
    want = cbulk.bulk_rows(batch, paths, infos, VERSION, at, dialect)
    assert cbulk.bulk_rows(batch, paths, infos, VERSION, at, dialect) == want
    i = batch.schema.get_field_index("terms")
    spoiled = batch.set_column(i, "terms", pa.array(['[["tag","wrong",1.0]]'] * len(batch), pa.string()))
    with caplog.at_level("WARNING", logger="imgsearch.cluster.bulk"):
        assert cbulk.bulk_rows(spoiled, paths, infos, VERSION, at, dialect) == want
    assert "differ from what this imgsearch makes" in caplog.text
    assert any("pari" in d for _, d in want.documents) and len(want.terms) == 40


def test_bulk_writer_commits_on_its_thread_and_restores_the_connection(tmp_path):
    db = tmp_path / "lib" / "library.db"
    with Library(db) as lib:
        store = lib.store
        w = cbulk.BulkWriter(store)
        try:
            assert w.cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
            assert w.cursor.execute("PRAGMA foreign_keys").fetchone()[0] == 0   # its rows name their photos
            tx = w.begin()
            w.conn.execute(text("INSERT INTO meta(key, value) VALUES ('s7', '1')"))
            called = []
            w.commit(tx, lambda: called.append(True))
            assert called == []                       # only once wait() has seen the COMMIT return
            w.wait()
            assert called == [True] and rows(db, "SELECT value FROM meta WHERE key = 's7'") == [("1",)]
            # a COMMIT that fails (a deferred foreign key, checked here for the test) raises in wait(); its
            # callback is never called
            w.cursor.execute("PRAGMA foreign_keys = ON")
            tx = w.begin()
            w.conn.execute(text("PRAGMA defer_foreign_keys = ON"))
            w.conn.execute(text("INSERT INTO photo_cells (photo_id, data) VALUES (12345, x'00')"))
            w.commit(tx, lambda: called.append(False))
            with pytest.raises(Exception, match="FOREIGN KEY"):
                w.wait()
            assert called == [True]
        finally:
            w.close()
        assert rows(db, "SELECT count(*) FROM photo_cells") == [(0,)]
        # the writer's connection was closed, not handed back: the pooled ones have the usual settings; the WAL
        # was copied back
        assert w.cursor.connection is not None
        with pytest.raises(sqlite3.ProgrammingError):
            w.cursor.connection.execute("SELECT 1")
        with store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
            assert c.exec_driver_sql("PRAGMA cache_size").scalar() != cbulk.BULK_CACHE_KIB
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with sqlite3.connect(db) as c:
        busy, log, done = c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log == done


KILLED = textwrap.dedent("""
    import sys, time
    from imgsearch import Library
    from imgsearch.cluster import run as cluster_run

    def progress(done, total):
        print(done, flush=True)
        if done >= 6 * int(sys.argv[3]):   # killed here: the last COMMIT and the WAL's copy may be under way
            time.sleep(60)

    with Library(sys.argv[1]) as lib:
        if sys.argv[4] == "wal":   # the library open elsewhere too (a plain connection): the ingest keeps the WAL
            import sqlite3
            other = sqlite3.connect(sys.argv[1])
            other.execute("SELECT count(*) FROM photos").fetchone()
        cluster_run.ingest(lib, sys.argv[2], progress=progress, chunk=int(sys.argv[3]))
""")


@pytest.mark.parametrize("journal", ["rollback", "wal"])
def test_an_ingest_killed_half_way_is_completed_by_a_rerun(tmp_path, journal):
    """SIGKILL while bulk transactions are committed (their COMMIT on the writer's thread) — through the rollback
    journal, or through the WAL and copied back (the checkpointer's) where the library is open elsewhere: the
    library holds whole transactions only, and a rerun gives exactly the rows of an ingest that was never
    interrupted — ids, tags in their order, cells, BM25 documents — and current search caches."""
    n, chunk = 1200, 50
    run = make_run(tmp_path, n)
    ref = tmp_path / "ref" / "library.db"
    with Library(ref) as lib:
        rep = cluster_run.ingest(lib, run, chunk=chunk)
    assert rep.added == n
    db = tmp_path / "lib" / "library.db"
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(db), str(run), str(chunk), journal], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for line in p.stdout:
            if int(line) >= 6 * chunk:            # a few transactions in: kill it while it writes more
                os.kill(p.pid, signal.SIGKILL)
                break
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    # killed while it wrote through the rollback journal (store/journal.py): a commit cut short is rolled back
    # from its hot journal by the next reader, as SQLite always does
    assert rows(db, "PRAGMA journal_mode") == [("delete" if journal == "rollback" else "wal",)]
    done = rows(db, "SELECT count(*) FROM photos")[0][0]
    assert 0 < done < n and done % chunk == 0                  # whole transactions only
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    check_consistent(db)
    assert rows(db, "SELECT count(*) FROM photo_fts")[0][0] == rows(db, "SELECT count(*) FROM photo_cells")[0][0] \
        == done
    with Library(db) as lib:
        rep = lib.ingest(run)
        assert rep.added == n - done and rep.not_ingested == 0
        assert len(lib.caches.vector_index("caption")) == len(lib.caches.vector_index("labels")) == n
    assert dump(db) == dump(ref)
    assert rows(db, "PRAGMA journal_mode") == [("wal",)] and not Path(f"{db}-journal").exists()
