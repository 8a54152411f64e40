"""tags packed one row a photo (photo_terms), the tags table replaced by a view of it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

A photo has ~14 tag rows (tags, caption keywords, region tags), each two B-tree inserts (the table and its
primary key): a bulk ingest's tag inserts were a third of its writes at 1M photos (bench/README.md, "Ingest
rate"), and every read of them goes by photo. photo_terms holds one row a photo, its terms a JSON array of
[kind, term, score] in their old row order; ``tags`` becomes a view of it (photo_id, pos, kind, term, score),
so that reads by SQL keep working. Copied in photo order, a few thousand photos a statement (a million photos'
tags are not held in memory). Downgrade makes the table again from the view, in the same order.
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

VIEW = ("CREATE VIEW tags (photo_id, pos, kind, term, score) AS "
        "SELECT t.photo_id, j.key, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), "
        "json_extract(j.value, '$[2]') FROM photo_terms AS t, json_each(t.terms) AS j")   # models.Tag maps it (read-only)
BATCH = 5000   # photos a statement


def upgrade() -> None:
    op.create_table(
        "photo_terms",
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("terms", sa.Text(), nullable=False),
    )
    raw = op.get_bind().connection.driver_connection
    read, write = raw.cursor(), raw.cursor()
    try:
        read.execute("SELECT photo_id, kind, term, score FROM tags ORDER BY photo_id, rowid")
        batch: list[tuple[int, str]] = []
        pid, terms = None, []
        while rows := read.fetchmany(20000):
            for p, kind, term, score in rows:
                if p != pid:
                    if terms:
                        batch.append((pid, _pack(terms)))
                    pid, terms = p, []
                terms.append([kind, term, float(score)])
            if len(batch) >= BATCH:
                write.executemany("INSERT INTO photo_terms (photo_id, terms) VALUES (?, ?)", batch)
                batch = []
        if terms:
            batch.append((pid, _pack(terms)))
        write.executemany("INSERT INTO photo_terms (photo_id, terms) VALUES (?, ?)", batch)
    finally:
        read.close()
        write.close()
    op.drop_table("tags")
    op.execute(VIEW)


def _pack(terms: list) -> str:
    return json.dumps(terms, ensure_ascii=False, separators=(",", ":"))   # = models.pack_terms


def downgrade() -> None:
    op.create_table(
        "tags_table",
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("term", sa.Text(), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.CheckConstraint("kind IN ('tag', 'keyword', 'region')", name="ck_tags_kind"),
    )
    op.execute("INSERT INTO tags_table (photo_id, kind, term, score) "
               "SELECT photo_id, kind, term, score FROM tags ORDER BY photo_id, pos")
    op.execute("DROP VIEW tags")
    op.drop_table("photo_terms")
    op.rename_table("tags_table", "tags")
