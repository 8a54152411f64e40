"""indexes on photos' versions, places and dates: queries over every photo no longer read its vectors

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

These columns come after the four 1.5 KB vectors in a photos record, so SQLite reaches them through the
record's overflow pages: a query that reads them for every photo reads the whole table (~6.5 KB a photo, ~8 GB
at 1M photos; 2.2 s at 100k from a cold cache). Every index run and ingest did that twice: the plan read
labels_version and ocr_version of every photo under its roots, and geotag.stale_places read places_version of
every photo. Each version now has an index, and those queries ask it for the photos not at the current version
(``IS NULL OR < ? OR > ?``, which SQLite answers from the index; ``!=`` cannot use one), so an up-to-date
library answers them without reading a record (the plan's other columns, before the vectors, still read each
record's first page: ~30 s from a cold cache at 1M, read-ahead bringing the rest in). ``imgsearch places``
(place_counts) reads a partial index of the good photos' places instead of the table, and a date filter or sort
(``--after``, ``--sort newest``: queries.ids_dated, by_date) and the list of good photos (good_ids) one of
(taken_at, mtime_ns, error): at 1M photos 1.75–1.98 s → 0.40 s and 1.5–2.2 s → 0.36–0.38 s, ~30 MB instead of
~8 GB to read from a cold cache.

Creating them reads the table once each (a one-time cost of the upgrade; measured in README, "Upgrading").
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

VERSIONS = ("labels_version", "ocr_version", "places_version")


def upgrade() -> None:
    for column in VERSIONS:
        op.create_index(f"ix_photos_{column}", "photos", [column])
    # error too (NULL in every entry): SQLite counts a column of the WHERE as covered only if the index holds it
    op.create_index("ix_photos_place", "photos", ["place", "error"],
                    sqlite_where=sa.text("place IS NOT NULL AND error IS NULL"))
    # not partial ("WHERE error IS NULL"): SQLite then chose a scan of it, with a look-up of every record, for
    # stale_places' "error IS NULL AND places_version ..." over the places_version index
    op.create_index("ix_photos_dates", "photos", ["taken_at", "mtime_ns", "error"])


def downgrade() -> None:
    op.drop_index("ix_photos_dates", table_name="photos")
    op.drop_index("ix_photos_place", table_name="photos")
    for column in reversed(VERSIONS):
        op.drop_index(f"ix_photos_{column}", table_name="photos")
