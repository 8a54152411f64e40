"""The library database: SQLAlchemy models, engine/session helpers, migrations on open."""
from .db import Store, StoreError, bump_revision, get_revision, open_store
from .models import Base, Caption, IndexRun, Meta, Photo, PhotoCells, PhotoTerms, Tag

__all__ = [
    "Base", "Caption", "IndexRun", "Meta", "Photo", "PhotoCells", "PhotoTerms", "Tag",
    "Store", "StoreError", "open_store", "get_revision", "bump_revision",
]
