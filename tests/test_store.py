"""The library database: engine settings, revision, cascades, refusing non-libraries, default paths."""
from __future__ import annotations

import re
import sqlite3
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import func, select, text

from imgsearch import paths
from imgsearch.store.writes import set_terms
from imgsearch.store import Caption, Photo, StoreError, Tag, bump_revision, get_revision, open_store
from imgsearch.store.db import PAGE_SIZE, alembic_config, head_revision
from imgsearch.store.models import pack_vector, unpack_vector


def _photo(path="/p/a.jpg", **kw):
    vals = dict(path=path, folder=path.rsplit("/", 1)[0], size=1, mtime_ns=2, indexed_at=datetime(2024, 1, 1))
    vals.update(kw)
    return Photo(**vals)


def test_new_library_settings(tmp_path):
    db = tmp_path / "sub" / "library.db"
    store = open_store(db)
    try:
        assert db.is_file()
        with store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
            assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
            assert c.exec_driver_sql("PRAGMA page_size").scalar() == PAGE_SIZE == 4096
        assert store.revision() >= 1
    finally:
        store.close()


def test_a_library_with_other_pages_keeps_them_and_works(tmp_path, monkeypatch):
    """A new library gets store/db.PAGE_SIZE; one made with other pages (64 KiB: PAGE_SIZE set otherwise when it
    was made) opens with today's PAGE_SIZE, takes writes (a bulk ingest's too: its WAL limit is in bytes) and
    reads, and keeps its pages."""
    from imgsearch.cluster.bulk import BulkWriter
    from imgsearch.store import db as store_db

    db = tmp_path / "library.db"
    monkeypatch.setattr(store_db, "PAGE_SIZE", 65536)
    open_store(db).close()
    monkeypatch.undo()
    store = open_store(db)
    try:
        vec = np.arange(384, dtype=np.float32).tobytes()
        with store.write() as s:
            s.add(_photo(caption="a dog", caption_embedding=vec, content_hash="h"))
        with store.session() as s:
            assert s.execute(select(Photo.caption_embedding)).scalar() == vec
        with store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA page_size").scalar() == 65536 != PAGE_SIZE
        w = BulkWriter(store)
        try:
            assert w.page_size == 65536
        finally:
            w.close()
    finally:
        store.close()


def test_revision_bumps_only_on_commit(tmp_path):
    store = open_store(tmp_path / "l.db")
    r0 = store.revision()
    with store.write() as s:
        assert bump_revision(s) == r0 + 1
    assert store.revision() == r0 + 1
    with pytest.raises(RuntimeError):
        with store.write() as s:
            s.add(_photo())
            bump_revision(s)
            raise RuntimeError("boom")
    assert store.revision() == r0 + 1
    with store.session() as s:
        assert s.execute(select(func.count()).select_from(Photo)).scalar_one() == 0
        assert get_revision(s) == r0 + 1
    store.close()


def test_revision_follows_commits_of_other_connections_and_processes(tmp_path):
    """Store.revision() re-reads meta.revision only when PRAGMA data_version says the file changed: it must
    still see every commit — this store's, another store's in this process, another process's — at once."""
    import subprocess
    import sys

    a, b = open_store(tmp_path / "l.db"), open_store(tmp_path / "l.db")
    r0 = a.revision()
    assert a.revision() == r0                       # unchanged: the remembered value
    with b.write() as s:
        bump_revision(s)
    assert a.revision() == r0 + 1                   # another connection's commit
    with a.write() as s:
        bump_revision(s)
    assert a.revision() == b.revision() == r0 + 2   # its own (through the pool's connections)
    code = ("import sys; from imgsearch.store import open_store, bump_revision\n"
            "st = open_store(sys.argv[1])\n"
            "with st.write() as s: bump_revision(s)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "l.db")], check=True)
    assert a.revision() == r0 + 3                   # another process's
    a.close()
    assert b.revision() == r0 + 3
    b.close()


def test_cascade_and_unique_path(tmp_path):
    store = open_store(tmp_path / "l.db")
    with store.write() as s:
        p = _photo(caption="a dog", caption_embedding=pack_vector(np.ones(384)))
        p.captions = [Caption(rank=0, text="a dog", score=-1.0), Caption(rank=1, text="a cat", score=-2.0)]
        s.add(p)
        s.flush()
        set_terms(s, p.id, [("tag", "dog", 0.9), ("keyword", "dog", 1.0)])
    with store.session() as s:   # the tags view shows the packed terms one row each, in their order
        assert s.execute(select(Tag.kind, Tag.term, Tag.score).order_by(Tag.pos)).all() == [
            ("tag", "dog", 0.9), ("keyword", "dog", 1.0)]
    with store.session() as s:
        p = s.execute(select(Photo)).scalar_one()
        assert [c.text for c in p.captions] == ["a dog", "a cat"]
        assert unpack_vector(p.caption_embedding).shape == (384,)
    with pytest.raises(Exception):
        with store.write() as s:
            s.add(_photo())  # same path
    with store.write() as s:
        s.execute(text("DELETE FROM photos"))  # plain SQL: the FK cascade does the rest
    with store.session() as s:
        assert s.execute(select(func.count()).select_from(Caption)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(Tag)).scalar_one() == 0
    store.close()


def test_set_terms_rejects_an_unknown_kind_and_keeps_the_old_terms(tmp_path):
    """The kind check that replaced the old tags table's CHECK constraint: a bad kind raises before anything is
    written, and the transaction's rollback keeps the photo's terms as they were."""
    store = open_store(tmp_path / "l.db")
    with store.write() as s:
        p = _photo(caption="a dog")
        s.add(p)
        s.flush()
        pid = p.id
        set_terms(s, pid, [("tag", "dog", 0.9)])
    with pytest.raises(ValueError, match="kind must be one of"):
        with store.write() as s:
            set_terms(s, pid, [("keyword", "beach", 1.0), ("label", "sand", 0.5)])
    with store.session() as s:
        assert s.execute(select(Tag.kind, Tag.term, Tag.score)).all() == [("tag", "dog", 0.9)]
    store.close()


def test_photo_ids_are_never_reused(tmp_path):
    store = open_store(tmp_path / "l.db")
    with store.write() as s:
        s.add(_photo("/p/1.jpg"))
        s.add(_photo("/p/2.jpg"))
    with store.write() as s:
        s.execute(text("DELETE FROM photos WHERE path = '/p/2.jpg'"))
    with store.write() as s:
        p = _photo("/p/3.jpg")
        s.add(p)
        s.flush()
        assert p.id == 3
    store.close()


def test_refuses_files_that_are_not_libraries(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an imgsearch library"):
        open_store(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE stuff (x)")
    with pytest.raises(StoreError, match="not an imgsearch library"):
        open_store(other)
    with pytest.raises(StoreError, match="no library"):
        open_store(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="directory"):
        open_store(tmp_path)


def test_refuses_a_newer_schema(tmp_path):
    db = tmp_path / "l.db"
    open_store(db).close()
    with sqlite3.connect(db) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="newer imgsearch"):
        open_store(db)


def test_models_match_migrations(tmp_path):
    """The declarative models and the migrated schema agree (alembic autogenerate finds nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from imgsearch.store.db import include_name
    from imgsearch.store.models import Base

    store = open_store(tmp_path / "l.db")
    with store.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"include_name": include_name})
        diffs = compare_metadata(ctx, Base.metadata)
    store.close()
    assert diffs == []
    assert alembic_config().get_main_option("script_location").endswith("migrations")


def test_default_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGSEARCH_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.resolve_db_path() == tmp_path / "xdg" / "imgsearch" / "library.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.resolve_db_path() == tmp_path / "home" / ".local" / "share" / "imgsearch" / "library.db"
    monkeypatch.setenv("IMGSEARCH_DB", str(tmp_path / "env.db"))
    assert paths.resolve_db_path() == tmp_path / "env.db"
    assert paths.resolve_db_path(tmp_path / "explicit.db") == tmp_path / "explicit.db"
    assert paths.resolve_db_path(tmp_path) == tmp_path / "library.db"  # an existing folder
    db = tmp_path / "library.db"
    assert paths.captions_faiss_path(db) == tmp_path / "library.db.captions.faiss"
    assert paths.images_faiss_path(db) == tmp_path / "library.db.images.faiss"
    assert paths.thumbs_dir(db) == tmp_path / "thumbs"


def test_version_and_place_queries_read_their_indexes_not_the_records(tmp_path, monkeypatch):
    """The queries over every photo (versions, places, dates) read their indexes (rev 0012): SQLite's plan for
    each statement they run names the index, and none scans the photos table (reading a record there reads its
    ~6 KB of vectors); the answers are those of a plain comparison."""
    from sqlalchemy import event

    from imgsearch.indexer.geotag import stale_places
    from imgsearch.places import PLACES_VERSION
    from imgsearch.store import queries

    store = open_store(tmp_path / "l.db")
    with store.write() as s:
        for i, (labels, place) in enumerate([(None, None), ("old", "Paris"), ("v2", "Paris"), ("zz", None)]):
            s.add(_photo(path=f"/p/{i}.jpg", labels_version=labels, place=place,
                         places_version=PLACES_VERSION if i % 2 else None))
    with store.session() as s:
        ids = dict(s.execute(select(Photo.path, Photo.id)).all())
    ran: list[tuple[str, tuple]] = []
    listen = lambda conn, cur, sql, params, ctx, many: ran.append((sql, params))   # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listen)
    id_set = queries._id_set    # the raw-cursor reads (no SQLAlchemy event): recorded here

    def recorded_id_set(st, sql, params=()):
        ran.append((sql, tuple(params)))
        return id_set(st, sql, params)

    monkeypatch.setattr(queries, "_id_set", recorded_id_set)
    try:
        with store.session() as s:
            assert queries.not_at_version(s, Photo.labels_version, "v2") == {ids[f"/p/{i}.jpg"] for i in (0, 1, 3)}
            assert queries.not_at_version(s, Photo.ocr_version, "v1") == set(ids.values())
            assert sorted(p for _, p in stale_places(s, set(ids))) == ["/p/0.jpg", "/p/2.jpg"]
        assert queries.place_counts(store) == [("Paris", 2)]
        # mtime_ns: 2 ns after the epoch (_photo), inside the range as nanoseconds; none has an EXIF date
        assert queries.ids_dated(store, datetime(1960, 1, 1), datetime(2000, 1, 1), 0, 10) == set(ids.values())
        assert queries.by_date(store, None, True, 2) == [(ids["/p/3.jpg"], 0.0), (ids["/p/2.jpg"], 0.0)]
        assert queries.good_ids(store) == set(ids.values())
    finally:
        event.remove(store.engine, "before_cursor_execute", listen)
    plans = []
    with store.engine.connect() as c:
        for sql, params in ran:
            if sql.lstrip().upper().startswith("SELECT"):
                plans.append(" | ".join(r[-1] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)))
    assert len(plans) == 7, ran
    # (index, searched: a range of it, not a scan of all of it); a scan of a whole index is ~30 B a photo, of the
    # table ~6.5 KB
    want = [("COVERING INDEX ix_photos_labels_version", True), ("COVERING INDEX ix_photos_ocr_version", True),
            ("INDEX ix_photos_places_version", True), ("COVERING INDEX ix_photos_place", True),
            ("COVERING INDEX ix_photos_dates", True), ("COVERING INDEX ix_photos_dates", False),
            ("COVERING INDEX ix_photos_dates", False)]
    for plan, (index, searched) in zip(plans, want):
        assert f"USING {index}" in plan and not re.search(r"SCAN photos(?! USING)", plan), plan
        assert not searched or "SCAN" not in plan, plan
    store.close()
