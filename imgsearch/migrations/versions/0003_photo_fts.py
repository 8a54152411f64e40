"""BM25 full-text index: the photo_fts FTS5 table (rowid = photos.id)

Revision ID: 0003
Revises: 0002
Create Date: 2024-06-03

* photo_fts holds, per good photo, the space-joined normalize.search_terms() of its
  captions + keywords + tags (see imgsearch.search.bm25; the DDL is copied here verbatim so
  this migration never changes when the module does).
* A trigger deletes a photo's document with the photo, whatever deletes it.
* The table starts empty and meta 'fts_normalizer' is cleared: the Library fills the table
  from the stored captions on first open (and again whenever NORMALIZER_VERSION changes),
  so libraries made before this migration become searchable by BM25 without re-captioning.
"""
from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS photo_fts USING fts5("
    "terms, tokenize = 'ascii', detail = full, columnsize = 1)"
)


def upgrade() -> None:
    op.execute(FTS_DDL)
    op.execute(
        "CREATE TRIGGER IF NOT EXISTS photos_fts_delete AFTER DELETE ON photos "
        "BEGIN DELETE FROM photo_fts WHERE rowid = old.id; END"
    )
    op.execute(
        "INSERT INTO meta(key, value) VALUES ('fts_normalizer', '') "
        "ON CONFLICT(key) DO UPDATE SET value = ''"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS photos_fts_delete")
    op.execute("DROP TABLE IF EXISTS photo_fts")
    op.execute("DELETE FROM meta WHERE key = 'fts_normalizer'")
