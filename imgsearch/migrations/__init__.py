"""Alembic migrations of the library schema (applied programmatically by imgsearch.store.open_store)."""
