"""meta.library_id: a random identity for each library, given when it is created

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Every derived file (the FAISS caches, the BM25 score cache) names the library it was built from
(this id) as well as the store revision, so a cache left beside a library.db that was deleted and made
again is never trusted when the new library happens to reach the same revision. A library made by
an older imgsearch gets its id here, the first time this version opens it (its caches are rebuilt
once: they carry no id).
"""
from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind().execute(
        sa.text("INSERT INTO meta(key, value) VALUES ('library_id', :v) ON CONFLICT(key) DO NOTHING"),
        {"v": uuid.uuid4().hex},
    )


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM meta WHERE key = 'library_id'"))
