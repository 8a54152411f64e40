"""What an index run has to do: scan the roots, diff against the photos stored under them.

The result is a :class:`Plan` value; nothing is written here. Unchanged files that failed before
are *not* retried (retry-when-changed) unless ``retry_failed``; a root that had photos and now
shows none keeps them unless ``prune_empty`` (see :func:`make_plan`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from imgsearch.indexer.scan import diff, scan
from imgsearch.model.labels import LABELS_VERSION
from imgsearch.paths import is_under, resolve_root
from imgsearch.store.queries import photos_under


@dataclass
class WorkItem:
    path: str
    reason: str            # why it is in the work list: "new" | "changed" | "stale" (model version) | "retry"
                           # (failed before) | "labels" (described, but without this version's zero-shot labels)
    photo_id: int | None   # the row at this path, if any


@dataclass
class Plan:
    roots: list[str]                     # resolved, as the scan reports paths under them
    work: list[WorkItem]                 # in scan order: new, changed, stale, labels, retry
    gone: dict[str, int]                 # path → id of stored photos whose files the scan did not find
    on_disk: set[str]                    # every path the scan found
    scan_errors: list[tuple[str, str]]   # (path, reason) of what the scan could not read
    kept_roots: list[tuple[str, int]] = field(default_factory=list)  # (root, photos kept): empty roots
    skipped_unchanged: int = 0           # unchanged files not in ``work``

    @property
    def errors(self) -> list[tuple[str, str]]:
        """What the run reports before any photo is decoded: scan errors, then the roots kept."""
        return self.scan_errors + [
            (r, f"no photos found here: kept its {n} indexed photos "
                "(unmounted drive?); index with prune_empty / --prune-empty to drop them")
            for r, n in self.kept_roots]

    def file_gone(self, path: str) -> bool:
        """Whether the stored photo at ``path`` no longer has its file (a move may then claim its row)."""
        if path in self.gone:
            return not os.path.exists(path)
        if path in self.on_disk:
            return False
        if any(is_under(path, r) for r in self.roots):
            return False  # under our roots but not gone per the scan (unreachable folder): leave it
        return not os.path.exists(path)


def make_plan(store, roots_in: list[str], *, get_version: Callable[[], str], retry_failed: bool = False,
              prune_empty: bool = False) -> Plan:
    """Scan ``roots_in`` and diff against the store. ``get_version()`` (the captioner's model version)
    is called only when some unchanged photo may need re-captioning by another version."""
    scan_errors: list[tuple[str, str]] = []
    entries = list(scan(roots_in, on_error=lambda p, r: scan_errors.append((p, r))))
    roots = [resolve_root(r) for r in roots_in]
    with store.session() as s:
        rows = photos_under(s, roots)
    d = diff(entries, {p: (r.size, r.mtime_ns) for p, r in rows.items()}, [p for p, _ in scan_errors])
    on_disk = {e.path for e in entries}
    gone = {p: rows[p].id for p in d.gone}
    kept_roots: list[tuple[str, int]] = []
    if not prune_empty:
        # A root that had photos and now shows none is far more often an unmounted drive or
        # an offline share than a deliberate "delete everything": keep its rows, say so.
        for r in roots:
            if not os.path.isdir(r) or any(is_under(p, r) for p in on_disk):  # a file root just goes
                continue
            kept = [p for p in gone if is_under(p, r)]
            if kept:
                for p in kept:
                    del gone[p]
                kept_roots.append((r, len(kept)))

    work: list[WorkItem] = [WorkItem(e.path, "new", None) for e in d.new]
    work += [WorkItem(e.path, "changed", rows[e.path].id) for e in d.changed]
    unchanged_ok = [p for p in d.unchanged if rows[p].error is None]
    unchanged_failed = [p for p in d.unchanged if rows[p].error is not None]
    version = get_version() if unchanged_ok else None
    stale = [p for p in unchanged_ok if rows[p].model_version != version or rows[p].caption is None]
    work += [WorkItem(p, "stale", rows[p].id) for p in stale]
    stale_set = set(stale)
    unlabelled = [p for p in unchanged_ok if p not in stale_set and rows[p].labels_version != LABELS_VERSION]
    work += [WorkItem(p, "labels", rows[p].id) for p in unlabelled]
    skipped = len(unchanged_ok) - len(stale) - len(unlabelled)
    if retry_failed:
        work += [WorkItem(p, "retry", rows[p].id) for p in unchanged_failed]
    else:
        skipped += len(unchanged_failed)
    return Plan(roots=roots, work=work, gone=gone, on_disk=on_disk, scan_errors=scan_errors,
                kept_roots=kept_roots, skipped_unchanged=skipped)
