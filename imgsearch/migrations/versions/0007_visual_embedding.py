"""photos.visual_embedding: what a photo looks like, for query by example

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

float32[384]: the photo's mean-pooled head channels (the encoder's ImageNet classifier input), normalised and
projected by a fixed random matrix (imgsearch.model.visual). It is made in the same pass as the zero-shot
labels (model/labels.LABELS_VERSION names both), so photos labelled before it get it on the next index run
by the labels pass (decode + encoder, no re-captioning). A column of photos, read with the other vectors.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN (in place): a batch table copy would drop the FTS triggers
    op.add_column("photos", sa.Column("visual_embedding", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("photos", "visual_embedding")
