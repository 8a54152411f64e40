"""SQLAlchemy 2 declarative models of a library.

The schema is owned by the Alembic migrations in ``imgsearch/migrations``; these
models mirror the head revision (``tests/test_migrations.py`` checks that they agree).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Optional

import numpy as np
from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text as sql_text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Photo(Base):
    """One file under an indexed root. A file that could not be decoded has ``error`` set and no caption."""

    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)                     # absolute, unique
    folder: Mapped[str] = mapped_column(Text, nullable=False)                   # absolute parent dir
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    mtime_ns: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[Optional[str]] = mapped_column(String(64))            # sha256 hex
    width: Mapped[Optional[int]] = mapped_column(Integer)
    height: Mapped[Optional[int]] = mapped_column(Integer)
    taken_at: Mapped[Optional[datetime]] = mapped_column(DateTime)              # EXIF DateTimeOriginal
    caption: Mapped[Optional[str]] = mapped_column(Text)                        # best caption
    model_version: Mapped[Optional[str]] = mapped_column(String(200))
    error: Mapped[Optional[str]] = mapped_column(Text)                          # why it could not be indexed
    indexed_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    caption_embedding: Mapped[Optional[bytes]] = mapped_column(LargeBinary)     # float32[EMBED_DIM]
    image_embedding: Mapped[Optional[bytes]] = mapped_column(LargeBinary)       # float32[EMBED_DIM] (rev 0002)
    labels: Mapped[Optional[bytes]] = mapped_column(LargeBinary)                # top classes, packed (rev 0005)
    label_embedding: Mapped[Optional[bytes]] = mapped_column(LargeBinary)       # float32[EMBED_DIM] (rev 0005)
    labels_version: Mapped[Optional[str]] = mapped_column(String(64))           # model/labels.LABELS_VERSION
    visual_embedding: Mapped[Optional[bytes]] = mapped_column(LargeBinary)      # float32[EMBED_DIM] (rev 0007)
    gps_lat: Mapped[Optional[float]] = mapped_column(Float)                     # EXIF GPS, degrees (rev 0008)
    gps_lon: Mapped[Optional[float]] = mapped_column(Float)
    place: Mapped[Optional[str]] = mapped_column(Text)                          # "city, region, country" (places.py)
    places_version: Mapped[Optional[str]] = mapped_column(String(64))           # places.PLACES_VERSION; NULL: GPS not read
    ocr_text: Mapped[Optional[str]] = mapped_column(Text)                       # text read in the photo (rev 0009)
    ocr_version: Mapped[Optional[str]] = mapped_column(String(64))              # indexer/ocr.OCR_VERSION; NULL: not read

    captions: Mapped[list["Caption"]] = relationship(
        back_populates="photo", cascade="all, delete-orphan", passive_deletes=True, order_by="Caption.rank"
    )

    __table_args__ = (
        UniqueConstraint("path", name="uq_photos_path"),
        Index("ix_photos_folder", "folder"),
        Index("ix_photos_content_hash", "content_hash"),
        Index("ix_photos_gps", "gps_lat", "gps_lon"),
        # rev 0012: a photos record is ~6.5 KB (the vectors), so a query that reads a column of every photo reads
        # the whole table; these let "which photos are not at this version", the places list and the dates read
        # an index instead
        Index("ix_photos_labels_version", "labels_version"),
        Index("ix_photos_ocr_version", "ocr_version"),
        Index("ix_photos_places_version", "places_version"),
        Index("ix_photos_place", "place", "error", sqlite_where=sql_text("place IS NOT NULL AND error IS NULL")),
        # the date filter and sort (store/queries.ids_dated, by_date) and good_ids read this instead of the
        # table; not partial: one on "error IS NULL" was chosen over the others' indexes (stale_places)
        Index("ix_photos_dates", "taken_at", "mtime_ns", "error"),
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:  # pragma: no cover
        return f"Photo(id={self.id}, path={self.path!r}, error={self.error!r})"


class Caption(Base):
    __tablename__ = "captions"

    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)                # 0 = best
    text: Mapped[str] = mapped_column(Text, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)                 # length-normalised log-prob

    photo: Mapped[Photo] = relationship(back_populates="captions")


class PhotoTerms(Base):
    """A photo's tags, keywords and region tags (rev 0011): one row a photo, ``terms`` a JSON array of
    [kind, term, score] in the order they were written (pack_terms). One row instead of ~14 tag rows a photo:
    a bulk ingest's tag inserts were a third of its writes (bench/README.md, "Ingest rate"). Every read goes by
    photo; the ``tags`` view (Tag) shows them one row a term, for SQL and the ORM. A photo without terms has
    no row. Written by store/writes.py (set_terms) and cluster/bulk.py only."""

    __tablename__ = "photo_terms"

    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True)
    terms: Mapped[str] = mapped_column(Text, nullable=False)


TAG_KINDS = ("tag", "keyword", "region")


class _ViewBase(DeclarativeBase):
    """Mappings of views: their own metadata, so that Alembic's autogenerate compares tables only."""


class Tag(_ViewBase):
    """One term of a photo, read through the ``tags`` view (read-only: write with store/writes.set_terms)."""

    __tablename__ = "tags"

    photo_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pos: Mapped[int] = mapped_column(Integer, primary_key=True)                 # place in the photo's terms
    kind: Mapped[str] = mapped_column(String(16))                              # 'tag' | 'keyword' | 'region'
    term: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)


_TERMS_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))   # made once: json.dumps with options
#                                                                            makes an encoder a call (~5 µs)


def pack_terms(rows, scores_are_floats: bool = False) -> str:
    """[(kind, term, score)] → the JSON text of PhotoTerms.terms (scores as floats; ``scores_are_floats``: the
    rows' scores are floats already, as store/writes.term_rows makes them, and the rows are encoded as they are)."""
    return _TERMS_JSON.encode(rows if scores_are_floats else [(k, t, float(sc)) for k, t, sc in rows])


def unpack_terms(text: str | None) -> list[tuple[str, str, float]]:
    """PhotoTerms.terms → [(kind, term, score)] in their stored order ([] for None)."""
    return [(k, t, float(sc)) for k, t, sc in json.loads(text)] if text else []


class PhotoCells(Base):
    """What the caption-likelihood re-ranker reads of a photo (rev 0004): the decoder's map of its grid
    cells, packed by imgsearch.model.rerank.pack_cells. Written with the photo's captions."""

    __tablename__ = "photo_cells"

    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Meta(Base):
    """Key/value. ``revision`` bumps with every committed write batch."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class IndexRun(Base):
    """One ``index`` run (rev 0002): when, over which roots, and what it did. ``finished_at`` NULL = interrupted."""

    __tablename__ = "index_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    roots: Mapped[str] = mapped_column(Text, nullable=False)                    # JSON list
    model_version: Mapped[Optional[str]] = mapped_column(String(200))
    added: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    moved: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    removed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped_unchanged: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    seconds: Mapped[Optional[float]] = mapped_column(Float)


def pack_vector(v) -> bytes | None:
    """float vector → float32 little-endian bytes (None stays None)."""
    if v is None:
        return None
    a = np.asarray(v, dtype="<f4").reshape(-1)
    return a.tobytes()


def unpack_vector(b: bytes | None) -> np.ndarray | None:
    if b is None:
        return None
    return np.frombuffer(b, dtype="<f4")
