"""A library made by an older schema upgrades cleanly when opened, data intact."""
from __future__ import annotations

import sqlite3

from imgsearch.store import open_store
from imgsearch.store.db import current_revision, head_revision, make_engine, migrate


def test_first_migration_upgrades_cleanly(tmp_path):
    db = tmp_path / "old.db"
    photo = tmp_path / "p" / "dog.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"x" * 123)
    engine = make_engine(db)
    migrate(engine, "0001")
    assert current_revision(engine) == "0001"
    engine.dispose()

    with sqlite3.connect(db) as c:
        cols = {r[1] for r in c.execute("PRAGMA table_info(photos)")}
        assert "image_embedding" not in cols
        c.execute(
            "INSERT INTO photos (path, folder, size, mtime_ns, content_hash, caption, model_version, indexed_at, "
            "caption_embedding) VALUES (?, ?, 123, 456, 'abc', 'a dog on grass', 'v1', "
            "'2024-01-01 00:00:00', ?)", (str(photo), str(photo.parent), b"\x00" * 384 * 4))
        pid = c.execute("SELECT id FROM photos").fetchone()[0]
        c.execute("INSERT INTO captions VALUES (?, 0, 'a dog on grass', -1.5)", (pid,))
        c.execute("INSERT INTO tags VALUES (?, 'tag', 'dog', 0.9)", (pid,))
        rev0 = int(c.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    store = open_store(db)
    try:
        assert current_revision(store.engine) == head_revision() != "0001"
        assert store.revision() > rev0  # caches keyed by the old revision are rebuilt
        with store.engine.connect() as c:
            row = c.exec_driver_sql(
                "SELECT path, folder, size, mtime_ns, caption, model_version, image_embedding, "
                "length(caption_embedding) FROM photos").one()
            assert tuple(row) == (str(photo), str(photo.parent), 123, 456, "a dog on grass", "v1", None, 1536)
            assert c.exec_driver_sql("SELECT text FROM captions").scalar() == "a dog on grass"
            assert c.exec_driver_sql("SELECT term FROM tags").scalar() == "dog"
            assert c.exec_driver_sql("SELECT count(*) FROM index_runs").scalar() == 0
            # the upgraded table still has AUTOINCREMENT (ids never reused) and the FK cascade
            c.exec_driver_sql("DELETE FROM photos")
            assert c.exec_driver_sql("SELECT count(*) FROM captions").scalar() == 0
            c.rollback()
    finally:
        store.close()

    # opening again is a no-op (already at head)
    store = open_store(db)
    assert current_revision(store.engine) == head_revision()
    store.close()

    # the Library fills the new BM25 table from the stored captions: searchable without re-captioning
    from imgsearch import Library

    with Library(db) as lib:
        hits = lib.query("dogs", mode="bm25")
        assert [(h.path, h.caption, h.tags) for h in hits] == [(str(photo), "a dog on grass", ["dog"])]
        assert lib.status()["photos"] == 1


def test_migrations_are_transactional(tmp_path, monkeypatch):
    """A failing migration leaves the file at the previous revision, not half-migrated."""
    import pytest
    from alembic.operations import Operations

    db = tmp_path / "l.db"
    engine = make_engine(db)
    migrate(engine, "0001")

    real = Operations.create_table

    def broken(self, name, *a, **kw):
        if name == "index_runs":
            raise RuntimeError("disk on fire")
        return real(self, name, *a, **kw)

    monkeypatch.setattr(Operations, "create_table", broken)
    with pytest.raises(RuntimeError):
        migrate(engine, "head")
    assert current_revision(engine) == "0001"
    with engine.connect() as c:
        cols = {r[1] for r in c.exec_driver_sql("PRAGMA table_info(photos)")}
    assert "image_embedding" not in cols  # the ADD COLUMN before the failure was rolled back
    engine.dispose()


def test_fast_head_matches_alembic():
    from imgsearch.store.db import head_from_files

    assert head_from_files() == head_revision()


def test_tags_term_index_dropped_and_restored(tmp_path):
    """0010 drops the unused ix_tags_term (tags kept); its downgrade makes it again."""
    db = tmp_path / "old.db"
    engine = make_engine(db)
    migrate(engine, "0009")
    engine.dispose()

    def indexes() -> set[str]:
        with sqlite3.connect(db) as c:
            return {r[1] for r in c.execute("PRAGMA index_list(tags)")}

    assert "ix_tags_term" in indexes()
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO photos (path, folder, size, mtime_ns, indexed_at) "
                  "VALUES ('/p/a.jpg', '/p', 1, 2, '2024-01-01 00:00:00')")
        c.execute("INSERT INTO tags VALUES (1, 'tag', 'dog', 0.9)")
    open_store(db).close()
    assert "ix_tags_term" not in indexes()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT photo_id, kind, term, score FROM tags").fetchall() == [(1, "tag", "dog", 0.9)]
    from alembic import command

    from imgsearch.store.db import alembic_config

    engine = make_engine(db)
    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0009")
        conn.commit()
    engine.dispose()
    assert "ix_tags_term" in indexes()


def test_tags_packed_one_row_a_photo_and_back(tmp_path):
    """0011: a library's tag rows become one photo_terms row a photo (their row order kept), the tags view shows
    them as before, deleting a photo drops its terms; downgrading makes the table again, rows in the same order."""
    from alembic import command

    from imgsearch.store.db import alembic_config

    db = tmp_path / "old.db"
    engine = make_engine(db)
    migrate(engine, "0010")
    engine.dispose()
    # photo 1: rows in an order that is not the key's; photo 2: none; photo 3: a unicode term
    rows = [(1, "tag", "zebra", 0.75), (3, "keyword", "café", 1.0), (1, "keyword", "stripes", 1.0),
            (1, "region", "grass", 0.25), (1, "tag", "animal", 0.5)]
    with sqlite3.connect(db) as c:
        for i in (1, 2, 3):
            c.execute("INSERT INTO photos (path, folder, size, mtime_ns, indexed_at) "
                      f"VALUES ('/p/{i}.jpg', '/p', 1, 2, '2024-01-01 00:00:00')")
        c.executemany("INSERT INTO tags VALUES (?, ?, ?, ?)", rows)
    open_store(db).close()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT type FROM sqlite_master WHERE name = 'tags'").fetchone() == ("view",)
        assert c.execute("SELECT photo_id FROM photo_terms ORDER BY photo_id").fetchall() == [(1,), (3,)]
        assert c.execute("SELECT photo_id, kind, term, score FROM tags ORDER BY photo_id, pos").fetchall() == [
            r for r in rows if r[0] == 1] + [r for r in rows if r[0] == 3]
        c.execute("PRAGMA foreign_keys = ON")
        c.execute("DELETE FROM photos WHERE id = 3")     # the FK cascade drops its terms
        assert c.execute("SELECT count(*) FROM photo_terms WHERE photo_id = 3").fetchone() == (0,)
    engine = make_engine(db)
    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0010")
        conn.commit()
    engine.dispose()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT type FROM sqlite_master WHERE name = 'tags'").fetchone() == ("table",)
        assert c.execute("SELECT photo_id, kind, term, score FROM tags ORDER BY rowid").fetchall() == [
            r for r in rows if r[0] == 1]
        assert "photo_terms" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
