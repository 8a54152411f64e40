"""drop ix_tags_term: no query reads tags by term

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Every read of the tags table goes by photo (its primary key, photo_id first): a photo's tags for its details,
its BM25 document, the start page's term counts over the last photos added. A search for a word reads the BM25
tables, never tags.term. The index only cost writes: one more B-tree insert per tag row, ~14 rows a photo
(a third of the tags inserts of a bulk ingest: bench/README.md, "Ingest rate"), and ~30 B a row on disk.
Downgrade makes it again.
"""
from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_tags_term")


def downgrade() -> None:
    op.create_index("ix_tags_term", "tags", ["term"])
