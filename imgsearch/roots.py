"""The folders a library was indexed from (``index_runs.roots``): how many photos each holds and whether
each can be reached now — what ``imgsearch status`` lists. Reads only; imports neither torch nor the indexer's
pipeline.

A root given as a single photo counts as its folder; a root inside another listed root is part of that one;
a root that no longer holds any photo (forgotten, pruned) is not listed.
"""
from __future__ import annotations

import os

from imgsearch.indexer.scan import is_image_name
from imgsearch.paths import is_under
from imgsearch.store import queries

STATES = ("ok", "empty", "missing", "unreadable")
"""ok: a folder with something in it (or a photo that exists); empty: a folder with nothing in it (an
unmounted drive's mount point?); missing: not there; unreadable: there, but cannot be listed."""


def reachability(path: str) -> str:
    """One of :data:`STATES` for ``path`` now (one ``stat``, and for a folder the first entry of a listing)."""
    try:
        if not os.path.isdir(path):
            return "ok" if os.path.exists(path) else "missing"
        with os.scandir(path) as it:
            return "ok" if any(not e.name.startswith(".") for e in it) else "empty"
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def _as_folder(root: str) -> str:
    """A root that names a photo counts as the folder it is in."""
    if not os.path.isdir(root) and is_image_name(os.path.basename(root)):
        return os.path.dirname(root) or os.sep
    return root.rstrip(os.sep) or os.sep


def root_status(store) -> list[dict]:
    """[{"path", "photos", "failed", "reachable", "state"}] for each root holding photos, by path."""
    folders = sorted({_as_folder(r) for r in queries.indexed_roots(store)}, key=len)
    outer: list[str] = []
    for f in folders:                       # outermost first: a nested root is part of its parent
        if not any(is_under(f, o) for o in outer):
            outer.append(f)
    out = []
    for f in sorted(outer):
        good, failed = queries.counts_under(store, f)
        if good + failed == 0:
            continue
        state = reachability(f)
        out.append({"path": f, "photos": good, "failed": failed, "reachable": state == "ok", "state": state})
    return out
