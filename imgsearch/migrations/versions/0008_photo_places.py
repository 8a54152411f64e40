"""photos.gps_lat, photos.gps_lon, photos.place, photos.places_version: where a photo was taken

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

* gps_lat, gps_lon: the EXIF GPS position in degrees (NULL: none, or not a real position — NaN, off the
  globe, the 0/0 placeholder); indexed together for the ``--near`` bounding box;
* place: the nearest GeoNames place within 50 km, "city, region, country" (imgsearch/places.py); its words
  are part of the photo's BM25 document;
* places_version: how the GPS was read and the place found (imgsearch.places.PLACES_VERSION). Photos indexed
  before this migration have none: the next index run re-reads their EXIF GPS (the file's header only: no
  decode, no re-captioning) and rewrites their BM25 documents.
Plain ALTER TABLE ADD COLUMN (SQLite does it in place): a batch table copy would drop the FTS triggers.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("photos", sa.Column("gps_lat", sa.Float(), nullable=True))
    op.add_column("photos", sa.Column("gps_lon", sa.Float(), nullable=True))
    op.add_column("photos", sa.Column("place", sa.Text(), nullable=True))
    op.add_column("photos", sa.Column("places_version", sa.String(length=64), nullable=True))
    op.create_index("ix_photos_gps", "photos", ["gps_lat", "gps_lon"])


def downgrade() -> None:
    op.drop_index("ix_photos_gps", table_name="photos")
    for column in ("places_version", "place", "gps_lon", "gps_lat"):   # SQLite >= 3.35 drops a column in place
        op.drop_column("photos", column)
