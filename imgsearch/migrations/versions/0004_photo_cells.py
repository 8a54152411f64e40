"""photo_cells: what the caption-likelihood re-ranker reads of each photo

Revision ID: 0004
Revises: 0003
Create Date: 2024-06-04

* photo_cells holds, per captioned photo, the captioning decoder's linear map of the photo's 7×7
  grid cells, int8 with a float16 scale per cell (imgsearch.model.rerank.pack_cells; ~12.6 KB).
  Hybrid queries re-rank their best candidates by the decoder's likelihood of the query, computed
  from these. A separate table (not a column of photos) so scans of photos stay small.
* Rows go with their photo (ON DELETE CASCADE). Photos captioned before this migration have none:
  the captioner version now ends in "+cells", so the next index run re-describes them.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photo_cells",
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("photo_cells")
