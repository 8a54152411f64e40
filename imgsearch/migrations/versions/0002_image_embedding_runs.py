"""image embeddings (photo embedding in MiniLM space) and a log of index runs

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-02

* photos.image_embedding: float32[384] from the captioner's image→text-space head
  (NULL for photos captioned by a model without one; the dense search then uses
  the caption embedding alone for them).
* index_runs: one row per `index` run, for `status` (last run, what it did) and to
  see interrupted runs (finished_at NULL).
* The FAISS caches are keyed by meta.revision; bump it so caches written by an older
  schema are rebuilt.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("image_embedding", sa.LargeBinary(), nullable=True))

    op.create_table(
        "index_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("roots", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(200)),
        sa.Column("added", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("moved", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("removed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped_unchanged", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("seconds", sa.Float()),
    )
    op.execute(
        "INSERT INTO meta(key, value) VALUES ('revision', '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
    )


def downgrade() -> None:
    op.drop_table("index_runs")
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("image_embedding")
