"""Bring an opened library's derived SQL up to this version of imgsearch.

The BM25 documents (the photo_fts table) hold normalised terms: when the text normalisation changes
(``NORMALIZER_VERSION``), or the table is new (libraries from before BM25 lived in SQLite), they are
rewritten from the stored captions, keywords and tags.
"""
from __future__ import annotations

import logging

from imgsearch.store.db import get_meta, set_meta
from imgsearch.store.writes import rebuild_search_text
from imgsearch.text.normalize import NORMALIZER_VERSION

log = logging.getLogger(__name__)


def sync_search_text(store) -> None:
    """Rebuild the BM25 documents when they were made with another text normalisation. A library that
    cannot be written (read-only medium) keeps searching with the terms it has."""
    with store.session() as s:
        if get_meta(s, "fts_normalizer") == NORMALIZER_VERSION:
            return
    try:
        with store.write() as s:
            if get_meta(s, "fts_normalizer") != NORMALIZER_VERSION:  # another process may have done it
                rebuild_search_text(s)
                set_meta(s, "fts_normalizer", NORMALIZER_VERSION)
    except Exception as e:  # noqa: BLE001 - e.g. a read-only library: search still works, with the old terms
        log.warning("could not rebuild the BM25 index of %s: %s", store.path, e)
