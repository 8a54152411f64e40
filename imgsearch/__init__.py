"""imgsearch: offline, caption-indexed photo search.

    from imgsearch import Library
    with Library() as lib:
        lib.index(["~/Pictures"])
        hits = lib.query("a dog running on the beach", k=5)

Importing the package is cheap: nothing heavy (torch, the models) is imported until used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Library", "Hit", "IndexReport", "ImgsearchError", "LibraryError", "Captioner", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from imgsearch.indexer.report import IndexReport
    from imgsearch.errors import ImgsearchError, LibraryError
    from imgsearch.hits import Hit
    from imgsearch.library import Library
    from imgsearch.model.captioner import Captioner

_LAZY = {
    "Library": "imgsearch.library",
    "Hit": "imgsearch.hits",
    "LibraryError": "imgsearch.errors",
    "ImgsearchError": "imgsearch.errors",
    "IndexReport": "imgsearch.indexer.report",
    "Captioner": "imgsearch.model.captioner",  # imports torch: only when asked for
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'imgsearch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
