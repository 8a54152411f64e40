"""What an index run has to do: scan the roots, diff against the photos stored under them.

The result is a :class:`Plan` value; nothing is written here. Unchanged files that failed before
are *not* retried (retry-when-changed) unless ``retry_failed`` or they failed under another model
version; a folder (a root or any folder below
it) that had photos and now shows none keeps them unless ``prune_empty`` (see :func:`keep_empty_folders`).
With ``verify``, unchanged files (same size and mtime) are re-hashed and those whose content changed
are re-described.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from imgsearch.indexer import rules
from imgsearch.indexer.ocr import OCR_VERSION
from imgsearch.indexer.scan import content_hash, diff, scan
from imgsearch.model.labels import LABELS_VERSION
from imgsearch.paths import is_under, resolve_root
from imgsearch.store.models import Photo
from imgsearch.store.queries import not_at_version, photos_under


@dataclass
class WorkItem:
    path: str
    reason: str            # why it is in the work list: "new" | "changed" | "stale" (model version) | "retry"
                           # (failed before) | "labels" (described, but without this version's zero-shot labels)
                           # | "ocr" (described, but its text not read by this OCR version: decode + OCR only)
    photo_id: int | None   # the row at this path, if any
    ocr: bool = False      # read the text in it (index --ocr: indexer/ocr.py)


@dataclass
class Plan:
    roots: list[str]                     # resolved, as the scan reports paths under them
    work: list[WorkItem]                 # in scan order: new, changed, stale, labels, ocr, retry
    gone: dict[str, int]                 # path → id of stored photos whose files the scan did not find
    on_disk: set[str]                    # every path the scan found
    scan_errors: list[tuple[str, str]]   # (path, reason) of what the scan could not read
    # folder → {path: id}: stored photos not found, kept because their folder (at or below a root) now
    # shows no photo at all — missing or empty: an unmounted drive? (see keep_empty_folders)
    kept: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_unchanged: int = 0           # unchanged files not in ``work``
    rehashed: int = 0                    # unchanged files re-hashed (``verify``)

    @property
    def errors(self) -> list[tuple[str, str]]:
        """What the run reports before any photo is decoded: the scan errors (the folders kept are
        :meth:`kept_folders`, reported at the end of the run, when moves have claimed what they could)."""
        return list(self.scan_errors)

    @property
    def _kept_paths(self) -> set[str]:
        if getattr(self, "_kept_set", None) is None:
            self._kept_set = {p for ps in self.kept.values() for p in ps}
        return self._kept_set

    def kept_folders(self, claimed: Iterable[int] = ()) -> list[tuple[str, int]]:
        """(folder, photos kept) for each folder kept, by folder; photos re-pointed by a move (``claimed``)
        are not kept, they moved."""
        taken = set(claimed)
        out = [(f, sum(1 for pid in ps.values() if pid not in taken)) for f, ps in sorted(self.kept.items())]
        return [(f, n) for f, n in out if n]

    def file_gone(self, path: str) -> bool:
        """Whether the stored photo at ``path`` no longer has its file (a move may then claim its row)."""
        if path in self.gone or path in self._kept_paths:
            return not os.path.exists(path)
        if path in self.on_disk:
            return False
        if any(is_under(path, r) for r in self.roots):
            return False  # under our roots but not gone per the scan (unreachable folder): leave it
        return not os.path.exists(path)


def keep_empty_folders(roots: list[str], on_disk: Iterable[str], gone: dict[str, int]) -> dict[str, dict[str, int]]:
    """Take out of ``gone`` (path → id) the photos whose folder now shows no photo; returns them by the
    *outermost* such folder (folder → {path: id}).

    The rule, for each stored photo the scan did not find: walk from its root down to the folder it was
    in; the first folder on the way under which the scan found no photo at all (missing, empty, or
    holding no image file) keeps it — an unmounted drive, an offline share, a mount point now empty.
    Photos deleted from a folder that still shows photos are gone. A root that is a single file is not
    a folder: its photo just goes. Whether a folder *was* a mount point cannot be told once the drive is
    unmounted (the mount point is an ordinary empty folder then, or the automounter removed it), so a
    deleted folder is kept too: ``prune_empty`` / ``imgsearch prune`` drop it."""
    shows: set[str] = set()   # every folder at or below which the scan found a photo
    for p in on_disk:
        d = os.path.dirname(p)
        while d not in shows:
            shows.add(d)
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
    dir_roots = sorted({r.rstrip(os.sep) or os.sep for r in roots if os.path.isdir(r)}, key=len)  # outermost first
    kept: dict[str, dict[str, int]] = {}
    for p in list(gone):
        root = next((r for r in dir_roots if p != r and is_under(p, r)), None)
        if root is None:
            continue
        rel = os.path.relpath(os.path.dirname(p), root)
        folder = root
        for part in ([] if rel == os.curdir else rel.split(os.sep)):
            if folder not in shows:
                break
            folder = os.path.join(folder, part)
        if folder not in shows:
            kept.setdefault(folder, {})[p] = gone.pop(p)
    return kept


def changed_content(paths: list[str], stored: Mapping[str, str | None],
                    on_error: Callable[[str, str], None], threads: int | None = None) -> list[str]:
    """The ``paths`` whose SHA-256 now differs from ``stored[path]`` (in the order given). Files that
    cannot be read are reported through ``on_error`` and left alone. Hashed on a few threads (hashlib
    releases the GIL; the disk is what bounds it)."""
    def check(p: str) -> bool:
        try:
            return content_hash(p) != stored.get(p)
        except FileNotFoundError:
            return False  # vanished since the scan: the next run sees it gone
        except OSError as e:
            on_error(p, f"could not re-hash: {e.strerror or type(e).__name__}")
            return False

    if not paths:
        return []
    n = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n) as pool:
        flags = list(pool.map(check, paths, chunksize=64))
    return [p for p, f in zip(paths, flags) if f]


def make_plan(store, roots_in: list[str], *, get_version: Callable[[], str], retry_failed: bool = False,
              prune_empty: bool = False, verify: bool = False, ocr: bool = False) -> Plan:
    """Scan ``roots_in`` and diff against the store. ``get_version()`` (the captioner's model version)
    is called only when some unchanged photo may need re-captioning by another version. ``verify``:
    re-hash the unchanged files too; those whose content changed are re-described ("changed"). ``ocr``: every
    photo described is read by OCR too, unless its text was read by this OCR_VERSION; photos with nothing
    else to do are "ocr" items."""
    scan_errors: list[tuple[str, str]] = []
    entries = list(scan(roots_in, on_error=lambda p, r: scan_errors.append((p, r))))
    roots = [resolve_root(r) for r in roots_in]
    with store.session() as s:
        rows = photos_under(s, roots)
        # ids, from the version indexes: an up-to-date library reads no record for them
        old_labels = not_at_version(s, Photo.labels_version, LABELS_VERSION)
        old_ocr = not_at_version(s, Photo.ocr_version, OCR_VERSION) if ocr else set()
    d = diff(entries, {p: (r.size, r.mtime_ns) for p, r in rows.items()}, [p for p, _ in scan_errors])
    on_disk = {e.path for e in entries}
    gone = {p: rows[p].id for p in d.gone}
    # A folder that had photos and now shows none is far more often an unmounted drive or an
    # offline share than a deliberate "delete everything": keep its rows, say so.
    kept = {} if prune_empty else keep_empty_folders(roots, on_disk, gone)

    work: list[WorkItem] = [WorkItem(e.path, "new", None) for e in d.new]
    work += [WorkItem(e.path, "changed", rows[e.path].id) for e in d.changed]
    unchanged_ok = [p for p in d.unchanged if rows[p].error is None]
    rehashed = 0
    if verify:   # same size and mtime, other content (a photo replaced by another one): re-described
        rehashed = len(unchanged_ok)
        differs = set(changed_content(unchanged_ok, {p: rows[p].content_hash for p in unchanged_ok},
                                      lambda p, r: scan_errors.append((p, r))))
        work += [WorkItem(p, "changed", rows[p].id) for p in unchanged_ok if p in differs]
        unchanged_ok = [p for p in unchanged_ok if p not in differs]
    unchanged_failed = [p for p in d.unchanged if rows[p].error is not None]
    version = get_version() if unchanged_ok or unchanged_failed else None
    stale = [p for p in unchanged_ok if rows[p].model_version != version or rows[p].caption is None]
    work += [WorkItem(p, "stale", rows[p].id) for p in stale]
    stale_set = set(stale)
    unlabelled = [p for p in unchanged_ok if p not in stale_set and rows[p].id in old_labels]
    work += [WorkItem(p, "labels", rows[p].id) for p in unlabelled]
    skipped = len(unchanged_ok) - len(stale) - len(unlabelled)
    if ocr:
        busy = stale_set | set(unlabelled)
        unread = [p for p in unchanged_ok if p not in busy and rows[p].id in old_ocr]
        work += [WorkItem(p, "ocr", rows[p].id) for p in unread]
        skipped -= len(unread)
    # failed before: retried when asked to, or when it failed under another model version (rules.retry_failure)
    retry = unchanged_failed if retry_failed else [p for p in unchanged_failed if rules.retry_failure(rows[p], version)]
    work += [WorkItem(p, "retry", rows[p].id) for p in retry]
    skipped += len(unchanged_failed) - len(retry)
    if ocr:
        for w in work:
            w.ocr = w.reason in ("new", "changed", "retry", "ocr") or rows[w.path].id in old_ocr
    return Plan(roots=roots, work=work, gone=gone, on_disk=on_disk, scan_errors=scan_errors,
                kept=kept, skipped_unchanged=skipped, rehashed=rehashed)
