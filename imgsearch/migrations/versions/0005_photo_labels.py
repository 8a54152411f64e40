"""photos.labels, photos.label_embedding, photos.labels_version: the zero-shot label signal

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

* labels: the photo's top ImageNet classes by their highest probability in any grid cell, packed
  (imgsearch.model.labels.pack: 4 bytes a class, 20 classes);
* label_embedding: float32[384], the probability-weighted mean of the classes' MiniLM text vectors;
* labels_version: how they were made (imgsearch.model.labels.LABELS_VERSION). Photos described before
  this migration have none: the next index run labels them (decode + encoder only, no re-captioning).
Columns of photos (not a table): 1.6 KB a photo, read with the other vectors.

* tags.kind may also be 'region': a tag read off the labels (a class seen in one part of the photo).
  SQLite cannot change a CHECK constraint, so the tags table is copied into a new one (in rowid order:
  tags are listed in stored order).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN (SQLite does it in place): a batch table copy would drop the FTS triggers
    op.add_column("photos", sa.Column("labels", sa.LargeBinary(), nullable=True))
    op.add_column("photos", sa.Column("label_embedding", sa.LargeBinary(), nullable=True))
    op.add_column("photos", sa.Column("labels_version", sa.String(length=64), nullable=True))
    _retag("kind IN ('tag', 'keyword', 'region')")


def _retag(check: str) -> None:
    op.create_table(
        "tags_new",
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("term", sa.Text(), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.CheckConstraint(check, name="ck_tags_kind"),
    )
    op.execute("INSERT INTO tags_new (photo_id, kind, term, score) "
               f"SELECT photo_id, kind, term, score FROM tags WHERE {check} ORDER BY rowid")
    op.drop_index("ix_tags_term", table_name="tags")
    op.drop_table("tags")
    op.rename_table("tags_new", "tags")
    op.create_index("ix_tags_term", "tags", ["term"])


def downgrade() -> None:
    _retag("kind IN ('tag', 'keyword')")   # region tags go
    for column in ("labels_version", "label_embedding", "labels"):   # SQLite >= 3.35 drops a column in place
        op.drop_column("photos", column)
