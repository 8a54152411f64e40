"""photos.ocr_text, photos.ocr_version and the photo_fts_ocr FTS5 table: text inside photos (OCR)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

* ocr_text: the words tesseract read in the photo (imgsearch/indexer/ocr.py), lines joined by newlines; ''
  when it read none; NULL when the photo was never read;
* ocr_version: how (imgsearch.indexer.ocr.OCR_VERSION): a change re-reads the photo on the next
  ``index --ocr``. Photos indexed before this migration have none: ``imgsearch index --ocr`` reads them
  (decode + OCR only, no re-captioning).
* photo_fts_ocr: the text's own BM25 field (rowid = photos.id; the space-joined normalize.search_terms() of
  ocr_text; DDL copied from imgsearch.search.bm25.OCR_DDL verbatim), with a trigger that deletes a photo's
  document with the photo. Only photos with text have a document.
Plain ALTER TABLE ADD COLUMN (SQLite does it in place): a batch table copy would drop the FTS triggers.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OCR_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS photo_fts_ocr USING fts5("
    "terms, tokenize = 'ascii', detail = full, columnsize = 1)"
)


def upgrade() -> None:
    op.add_column("photos", sa.Column("ocr_text", sa.Text(), nullable=True))
    op.add_column("photos", sa.Column("ocr_version", sa.String(length=64), nullable=True))
    op.execute(OCR_DDL)
    op.execute(
        "CREATE TRIGGER IF NOT EXISTS photos_fts_ocr_delete AFTER DELETE ON photos "
        "BEGIN DELETE FROM photo_fts_ocr WHERE rowid = old.id; END"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS photos_fts_ocr_delete")
    op.execute("DROP TABLE IF EXISTS photo_fts_ocr")
    for column in ("ocr_version", "ocr_text"):   # SQLite >= 3.35 drops a column in place
        op.drop_column("photos", column)
