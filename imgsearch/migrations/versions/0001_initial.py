"""initial schema: photos, captions, tags, meta

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("mtime_ns", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("taken_at", sa.DateTime()),
        sa.Column("caption", sa.Text()),
        sa.Column("model_version", sa.String(200)),
        sa.Column("error", sa.Text()),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.Column("caption_embedding", sa.LargeBinary()),
        sa.UniqueConstraint("path", name="uq_photos_path"),
        sqlite_autoincrement=True,  # photo ids are never reused (thumbnails, FAISS ids, web links)
    )
    op.create_index("ix_photos_folder", "photos", ["folder"])
    op.create_index("ix_photos_content_hash", "photos", ["content_hash"])

    op.create_table(
        "captions",
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
    )

    op.create_table(
        "tags",
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("term", sa.Text(), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.CheckConstraint("kind IN ('tag', 'keyword')", name="ck_tags_kind"),
    )
    op.create_index("ix_tags_term", "tags", ["term"])

    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.bulk_insert(
        sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text)),
        [{"key": "revision", "value": "0"}],
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_index("ix_tags_term", table_name="tags")
    op.drop_table("tags")
    op.drop_table("captions")
    op.drop_index("ix_photos_content_hash", table_name="photos")
    op.drop_index("ix_photos_folder", table_name="photos")
    op.drop_table("photos")
