"""Stage 1 of indexing: walk photo folders, list image files, diff against what the store knows.

Design decisions
----------------
* Paths are absolute.  Each root is resolved once with ``realpath`` (so ``~/Pictures`` → its real
  location); below the root, names are kept as found on disk (a symlinked sub-folder or a symlinked
  file is reported under the link's own name, not its target's).
* Symlinks are followed, safely: every folder walked is remembered by ``(st_dev, st_ino)``, so a
  symlink loop (or a link back to a parent) is walked at most once.
* A photo reachable twice (symlinked folders, symlinked files, hard links, overlapping roots) is
  reported once, keyed by the ``(st_dev, st_ino)`` of the file it resolves to.  Real paths win over
  paths through symlinks: everything reached through a symlink is walked only after all real
  folders of all roots, so the canonical location of a photo is what gets indexed.
* Skipped silently: hidden files and folders (name starts with ``.``), NAS/OS clutter folders
  (:data:`SKIP_DIR_NAMES`), files without an image extension, non-regular files (FIFOs, sockets,
  devices), broken symlinks, and files or folders that vanish while the walk is in progress.
* Reported through ``on_error(path, reason)`` and skipped, never raised: folders that cannot be
  listed (permission denied, I/O error) and names that are not valid UTF-8 (they could not be
  stored in SQLite as text).  Without ``on_error`` these go to ``logging`` as warnings.
* A root that does not exist raises :class:`RootNotFoundError` (a ``FileNotFoundError``) up front,
  when :func:`scan` is called, before anything is yielded: an unmounted drive must never look like
  "every photo was deleted".
* A root may be a single file; it is yielded whatever its name or extension (the user asked for it
  explicitly; the decoder will say if it is not an image).

Speed: ``os.scandir`` + one ``lstat`` per image file.  Measured: 100k files in 500 folders scan in
1.7-2.2 s (``diff`` against 100k known paths: 0.25 s) on the 2-core dev box while it was fully loaded.  ``content_hash`` is full SHA-256 (measured ≈2.2 ms for a 3.3 MB 12 MP JPEG on the 2-core
dev box under load, i.e. ≈1.5 GB/s with SHA-NI); disk read dominates, so no partial "quick hash".
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

from imgsearch.errors import UserError
from imgsearch.files import sha256_file

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"}
)
"""Lower-case extensions (without the dot) that are scanned; matching is case-insensitive."""

SKIP_DIR_NAMES: frozenset[str] = frozenset(
    {"@eaDir", "__MACOSX", "$RECYCLE.BIN", "System Volume Information", "lost+found"}
)
"""Folder names never walked: NAS thumbnail caches (Synology ``@eaDir``), archive/OS clutter."""

OnError = Callable[[str, str], None]


class RootNotFoundError(UserError, FileNotFoundError):
    """A folder (or file) given to :func:`scan` does not exist."""

    def __init__(self, path: str):
        FileNotFoundError.__init__(self, errno.ENOENT, "photo folder or file not found", path)


@dataclass(frozen=True)
class FileEntry:
    path: str       # absolute; root resolved with realpath, names below it as found on disk
    size: int       # bytes (of the target, for a symlinked file)
    mtime_ns: int   # st_mtime_ns (of the target, for a symlinked file)


@dataclass
class ScanDiff:
    new: list[FileEntry] = field(default_factory=list)      # path not known before
    changed: list[FileEntry] = field(default_factory=list)  # known path, size or mtime differ
    unchanged: list[str] = field(default_factory=list)      # known path, same size and mtime
    gone: list[str] = field(default_factory=list)           # known path not seen this scan
    # known paths not seen this scan, but inside a folder the scan could not read (see diff());
    # they are neither gone nor confirmed: leave them alone.
    unreachable: list[str] = field(default_factory=list)


def is_image_name(name: str) -> bool:
    """True when ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    dot = name.rfind(".")
    return dot > 0 and name[dot + 1:].lower() in IMAGE_EXTENSIONS


def _utf8_ok(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes on disk → lone surrogates (surrogateescape)
        return False
    return True


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def _default_on_error(path: str, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)


def scan(roots: Iterable[str | os.PathLike[str]], on_error: OnError | None = None) -> Iterator[FileEntry]:
    """Yield a :class:`FileEntry` for every image file under ``roots`` (recursively).

    Roots are checked when this function is called: a missing root raises
    :class:`RootNotFoundError` immediately.  The walk itself happens lazily as the iterator is
    consumed; it never raises for problems inside the tree (see the module docstring).
    """
    report = on_error or _default_on_error
    checked: list[tuple[str, os.stat_result]] = []
    for root in roots:
        p = os.path.abspath(os.path.expanduser(os.fspath(root)))
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise RootNotFoundError(p) from None
        except NotADirectoryError:  # a parent component is a file
            raise RootNotFoundError(p) from None
        except OSError as exc:  # e.g. permission denied on a parent folder
            checked.append((p, None))  # type: ignore[arg-type]
            report(p, _reason(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            checked.append((os.path.realpath(p), st))
        else:
            # a single file: keep its own name, resolve the folder it sits in
            checked.append((os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p)), st))
    return _walk(checked, report)


def _walk(roots: list[tuple[str, os.stat_result | None]], report: OnError) -> Iterator[FileEntry]:
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int] | str] = set()
    deferred: deque[str] = deque()  # paths reached through a symlink: walked after all real folders

    def file_key(path: str, st: os.stat_result) -> tuple[int, int] | str:
        if st.st_ino:
            return (st.st_dev, st.st_ino)
        return os.path.realpath(path)  # filesystems without stable inode numbers

    def walk_dir(top: str, top_st: os.stat_result) -> Iterator[FileEntry]:
        key = (top_st.st_dev, top_st.st_ino)
        if key in seen_dirs:
            return
        seen_dirs.add(key)
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                continue  # vanished mid-scan
            except NotADirectoryError:
                continue  # replaced by a file mid-scan
            except OSError as exc:
                report(folder, _reason(exc))
                continue
            subdirs: list[str] = []
            for e in entries:
                name = e.name
                if name.startswith("."):
                    continue
                try:
                    if e.is_symlink():
                        if _utf8_ok(name):
                            deferred.append(e.path)
                        else:
                            report(e.path, "name is not valid UTF-8")
                        continue
                    if e.is_dir(follow_symlinks=False):
                        if name in SKIP_DIR_NAMES:
                            continue
                        if not _utf8_ok(name):
                            report(e.path, "name is not valid UTF-8")
                            continue
                        st = e.stat(follow_symlinks=False)
                        k = (st.st_dev, st.st_ino)
                        if k not in seen_dirs:
                            seen_dirs.add(k)
                            subdirs.append(e.path)
                        continue
                    if not is_image_name(name) or not e.is_file(follow_symlinks=False):
                        continue
                    if not _utf8_ok(name):
                        report(e.path, "name is not valid UTF-8")
                        continue
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished between listing and stat
                except OSError as exc:
                    report(e.path, _reason(exc))
                    continue
                fk = file_key(e.path, st)
                if fk in seen_files:
                    continue
                seen_files.add(fk)
                yield FileEntry(e.path, st.st_size, st.st_mtime_ns)
            stack.extend(reversed(subdirs))  # pop in sorted order: depth-first, pre-order

    def follow(path: str) -> Iterator[FileEntry]:
        try:
            st = os.stat(path)  # follows the link
        except (FileNotFoundError, NotADirectoryError):
            return  # broken link, or vanished
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return  # a link pointing at itself
            report(path, _reason(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            if os.path.basename(path) not in SKIP_DIR_NAMES:
                yield from walk_dir(path, st)
        elif stat.S_ISREG(st.st_mode) and is_image_name(os.path.basename(path)):
            fk = file_key(path, st)
            if fk not in seen_files:
                seen_files.add(fk)
                yield FileEntry(path, st.st_size, st.st_mtime_ns)

    # Pass 1: the real folders of every root (and single-file roots, whatever their name).
    for path, st in roots:
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from walk_dir(path, st)
        elif stat.S_ISREG(st.st_mode):
            fk = file_key(path, st)
            if fk not in seen_files:
                seen_files.add(fk)
                yield FileEntry(path, st.st_size, st.st_mtime_ns)
        else:
            report(path, "not a folder or a regular file")
    # Pass 2: everything reached through symlinks (which may queue further symlinks).
    while deferred:
        yield from follow(deferred.popleft())


content_hash = sha256_file
"""SHA-256 (hex) of the whole file: the name the store and the pipeline know it by."""


def _under(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f if f.endswith(os.sep) else f + os.sep) for f in folders)


def diff(
    entries: Iterable[FileEntry],
    known: Mapping[str, tuple[int, int]],
    unreadable: Iterable[str] = (),
) -> ScanDiff:
    """Compare a scan with what the store knows (``path -> (size, mtime_ns)``). Pure function.

    * ``new``: scanned paths not in ``known``; ``changed``: known paths whose size or mtime differ;
      ``unchanged``: known paths with the same size and mtime; ``gone``: known paths not scanned.
    * ``known`` must only hold paths under the roots that were scanned — anything else would be
      reported as gone.
    * ``unreadable``: folders the scan reported through ``on_error`` (pass their paths).  Known
      paths under them that were not seen go to ``unreachable`` instead of ``gone``, so a
      temporarily unreadable folder does not wipe its photos from the index.
    * Moves are not detected here: match ``new`` against ``gone`` by content hash.
    Order: ``new``/``changed``/``unchanged`` follow the scan; ``gone``/``unreachable`` are sorted.
    """
    out = ScanDiff()
    seen: set[str] = set()
    for e in entries:
        if e.path in seen:
            continue
        seen.add(e.path)
        old = known.get(e.path)
        if old is None:
            out.new.append(e)
        elif tuple(old) == (e.size, e.mtime_ns):
            out.unchanged.append(e.path)
        else:
            out.changed.append(e)
    bad = [f.rstrip(os.sep) or os.sep for f in unreadable]
    for p in sorted(known):
        if p in seen:
            continue
        if bad and _under(p, bad):
            out.unreachable.append(p)
        else:
            out.gone.append(p)
    return out


__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIP_DIR_NAMES",
    "FileEntry",
    "RootNotFoundError",
    "ScanDiff",
    "content_hash",
    "diff",
    "is_image_name",
    "scan",
]
