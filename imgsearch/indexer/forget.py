"""Taking photos out of a library: ``forget`` (these paths, whether or not they still exist) and ``prune``
(photos whose files are gone, under a path or everywhere).

Both select rows here and remove them through the store's write path (``writes.remove_photos``: captions,
tags and cells cascade, a trigger drops the BM25 documents; one transaction that bumps the revision), so the
caller (``Library``) can patch the search caches with the removed ids, and both delete the thumbnails no
remaining photo shares (thumbnails are keyed by content hash). Failed-file records count as photos here:
they go too. Nothing here imports torch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from imgsearch.paths import resolve_root
from imgsearch.store import queries, writes
from imgsearch.store.db import bump_revision

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class RemovalReport:
    """What ``forget`` / ``prune`` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    photos: int = 0                                   # good photos
    failed: int = 0                                   # failed-file records
    folders: list[tuple[str, int]] = field(default_factory=list)   # (folder, rows) by folder
    paths: list[str] = field(default_factory=list)    # every path removed, by path
    unmatched: list[str] = field(default_factory=list)   # paths given that hold no photo of the library
    unreachable: list[str] = field(default_factory=list)  # prune: files that could not be checked: left alone
    thumbnails: int = 0                               # cached thumbnails deleted
    ids: list[int] = field(default_factory=list, repr=False)
    hashes: set[str] = field(default_factory=set, repr=False)

    @property
    def removed(self) -> int:
        return self.photos + self.failed

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "removed": self.removed, "photos": self.photos, "failed": self.failed,
                "folders": [{"folder": f, "photos": n} for f, n in self.folders], "paths": self.paths,
                "unmatched": self.unmatched, "unreachable": self.unreachable, "thumbnails": self.thumbnails}


def _spellings(path: str | os.PathLike) -> list[str]:
    """The paths under which the store may know ``path``: as given (absolute; names below an indexed root
    are kept as found, symlinks included) and resolved as a root is (``realpath``)."""
    p = os.path.abspath(os.path.expanduser(os.fspath(path)))
    return list(dict.fromkeys([p.rstrip(os.sep) or os.sep, resolve_root(p).rstrip(os.sep) or os.sep]))


def _add(report: RemovalReport, row) -> None:
    report.ids.append(row.id)
    report.paths.append(row.path)
    if row.error is None:
        report.photos += 1
    else:
        report.failed += 1
    if row.content_hash:
        report.hashes.add(row.content_hash)


def _group(report: RemovalReport, folders: list[str]) -> RemovalReport:
    counts: dict[str, int] = {}
    for f in folders:
        counts[f] = counts.get(f, 0) + 1
    report.folders = sorted(counts.items())
    report.paths.sort()
    return report


def select_forget(store, paths: Iterable[str | os.PathLike]) -> RemovalReport:
    """The photos (and failed-file records) at or below each of ``paths``."""
    report, folders, seen = RemovalReport(), [], set()
    with store.session() as s:
        for given in paths:
            found = False
            for row in queries.photo_files(s, _spellings(given)):
                found = True
                if row.id not in seen:
                    seen.add(row.id)
                    _add(report, row)
                    folders.append(row.folder)
            if not found:
                report.unmatched.append(os.fspath(given))
    return _group(report, folders)


def _file_state(path: str) -> str:
    """"gone", "here" or "unknown" (it could not be checked: permission denied, I/O error...)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "gone"
    except OSError:
        return "unknown"
    return "here"


def select_prune(store, path: str | os.PathLike | None = None) -> RemovalReport:
    """The photos (and failed-file records) whose file is gone: at or below ``path``, or all of them. A
    file that cannot be checked (an unreadable folder) is left alone and listed as unreachable."""
    report, folders = RemovalReport(), []
    folder_state: dict[str, str] = {}
    with store.session() as s:
        rows = queries.photo_files(s, None if path is None else _spellings(path))
        any_row = False
        for row in rows:
            any_row = True
            st = folder_state.get(row.folder)
            if st is None:   # a folder that is gone takes all its files with it: one stat for the lot
                st = folder_state[row.folder] = "gone" if _file_state(row.folder) == "gone" else "check"
            state = "gone" if st == "gone" else _file_state(row.path)
            if state == "gone":
                _add(report, row)
                folders.append(row.folder)
            elif state == "unknown":
                report.unreachable.append(row.path)
    if path is not None and not any_row:
        report.unmatched.append(os.fspath(path))
    return _group(report, folders)


def remove(store, report: RemovalReport) -> None:
    """Delete the rows ``report`` selected, in one write transaction that bumps the revision."""
    if not report.ids:
        return
    with store.write() as s:
        writes.remove_photos(s, report.ids)
        bump_revision(s)


def delete_thumbnails(store, thumbs_dir: str | os.PathLike, hashes: Iterable[str]) -> int:
    """Delete the cached thumbnails of ``hashes`` that no stored photo has any more; returns how many."""
    hashes = {h for h in hashes if h and _HASH_RE.match(h)}
    if not hashes or not Path(thumbs_dir).is_dir():
        return 0
    with store.session() as s:
        hashes -= queries.hashes_in_use(s, hashes)
    n = 0
    for h in sorted(hashes):
        try:
            (Path(thumbs_dir) / f"{h}.jpg").unlink()
            n += 1
        except FileNotFoundError:
            pass
        except OSError:   # a read-only library folder: the thumbnail is only a cache
            pass
    return n
