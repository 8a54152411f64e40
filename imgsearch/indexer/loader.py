"""Decoding photos in ``torch.utils.data.DataLoader`` worker processes, for indexing and captioning.

A worker never raises: each item comes back as ``(index, tensor | None, info)`` where ``info``
carries the file's stat, SHA-256 and size/EXIF date, or the error text; :func:`collate` stacks the
good ones. A worker that dies (a segfault in a native decoder) or hangs surfaces as a
``RuntimeError`` from :func:`batches`; :func:`crash_reason` turns it into the text recorded against
the file. torch is imported only inside the functions: importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any, Sequence

from imgsearch.errors import DecodeError
from imgsearch.gcpause import forking

# A batch that takes longer than this to decode means a worker hung (a decoder stuck on a
# malicious file): the run isolates and records that file instead of waiting forever.
BATCH_TIMEOUT_S = 600
ISOLATE_TIMEOUT_S = 120


def decode_one(path: str, image_size: int, resize: str, ocr: bool = False):
    """(tensor, info) for one file; raises on failure. Runs inside DataLoader workers. ``ocr``: also read the
    text in it (info "ocr_text"; an OCR failure is info "ocr_error", never the photo's)."""
    from imgsearch.indexer import decode as dec
    from imgsearch.indexer.scan import content_hash

    st = os.stat(path)
    info: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    info["content_hash"] = content_hash(path)
    photo = dec.open_photo(path, target=image_size)
    info["width"], info["height"] = photo.width, photo.height
    info["taken_at"] = photo.taken_at.isoformat() if photo.taken_at is not None else None
    info["gps"] = list(photo.gps) if photo.gps is not None else None   # the place is looked up by the writer
    tensor = dec.to_model_input(photo, image_size, resize)
    if ocr:
        from imgsearch.indexer import ocr as reader

        try:
            info["ocr_text"] = reader.ocr_file(path)
        except Exception as e:  # noqa: BLE001 - the photo is still described; its text is tried next run
            info["ocr_error"] = error_text(e)
    return tensor, info


def error_text(e: BaseException) -> str:
    """The short reason stored in ``photos.error`` for a file that could not be decoded."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, DecodeError):
        return msg or "cannot decode"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class PhotoDataset:
    """``torch.utils.data.Dataset``-compatible: item i → ``(i, tensor | None, info)``; never raises."""

    def __init__(self, paths: Sequence[str], image_size: int, resize: str, offset: int = 0,
                 ocr: Sequence[bool] | None = None):
        self.paths = list(paths)
        self.ocr = list(ocr) if ocr is not None else None   # per path: read its text too (indexer/ocr.py)
        self.image_size = image_size
        self.resize = resize
        self.offset = offset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            tensor, info = decode_one(path, self.image_size, self.resize, bool(self.ocr and self.ocr[i]))
            return self.offset + i, tensor, info
        except BaseException as e:  # noqa: BLE001 - a worker must never die on a bad file
            if isinstance(e, KeyboardInterrupt):
                raise
            return self.offset + i, None, {"error": error_text(e)}


def collate(items):
    """Stack decoded tensors; failures travel alongside: ``(ok_idx, tensor|None, ok_infos, failed)``."""
    import torch

    ok = [(i, t, info) for i, t, info in items if t is not None]
    failed = [(i, info) for i, t, info in items if t is None]
    images = torch.stack([t for _, t, _ in ok]) if ok else None
    return [i for i, _, _ in ok], images, [info for _, _, info in ok], failed


def worker_init(_worker_id: int) -> None:
    _die_with_parent()
    import torch

    torch.set_num_threads(1)


def _die_with_parent() -> None:
    """Linux: the worker is killed when the process that started it dies (``kill -9``), instead of decoding on
    until torch's watchdog notices (~5 s). (The index lock is not held by workers in any case: indexer/lock.py.)"""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import multiprocessing
        import signal

        parent = multiprocessing.parent_process()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent.pid:   # it died before the prctl
            os._exit(1)
    except (OSError, AttributeError, ValueError):  # pragma: no cover - no libc / prctl: torch's watchdog remains
        pass


@contextlib.contextmanager
def model_threads(workers: int):
    """Model threads in the main process while ``workers`` decode processes run: the cores the workers
    leave free (at least 1). On the 2-core machine, 2 workers and 2 model threads oversubscribe the cores:
    bench/index_throughput.py measured 15.2 photos/s that way vs 21.3 with 1 model thread (324 photos)."""
    import torch

    before = torch.get_num_threads()
    want = max(1, min(before, (os.cpu_count() or 1) - workers)) if workers > 0 else before
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    return max(0, min(4, os.cpu_count() or 1))


def crash_reason(e: BaseException) -> str:
    """The text recorded against a file whose decoder killed or hung its worker (``e`` from :func:`batches`)."""
    msg = str(e)
    if "timed out" in msg:
        return "decoder hung (timed out)"
    m = re.search(r"killed by signal: ([^.]+)", msg)
    if m:
        return f"decoder crashed ({m.group(1).strip()})"
    return "decoder crashed"


def batches(paths: Sequence[str], image_size: int, resize: str, batch_size: int, workers: int, pin_memory=False,
            offset: int = 0, timeout: float | None = None, ocr: Sequence[bool] | None = None):
    """Yield collated batches in order (indices are ``offset + i``); ``workers=0`` decodes in this process.
    ``ocr``: per path, whether to read the text in it too."""
    from torch.utils.data import DataLoader

    ds = PhotoDataset(paths, image_size, resize, offset, ocr)
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {"worker_init_fn": worker_init, "prefetch_factor": 2, "persistent_workers": False,
              "timeout": BATCH_TIMEOUT_S if timeout is None else timeout}
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=pin_memory, **kw,
    )
    with forking() if workers > 0 else contextlib.nullcontext():   # the workers are forked here
        it = iter(loader)
    try:
        yield from it
    except RuntimeError:
        _kill_workers(it)
        raise
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _kill_workers(it) -> None:
    """A worker died or hung: kill the others now instead of waiting for them to notice (first stop
    torch watching their pids, or their deaths raise over the error being reported)."""
    try:
        from torch.utils.data import _utils

        if getattr(it, "_worker_pids_set", False):
            _utils.signal_handling._remove_worker_pids(id(it))
            it._worker_pids_set = False
    except (ImportError, AttributeError, ValueError):  # pragma: no cover - private torch API moved,
        pass                                                 # or the pids are no longer registered
    for w in getattr(it, "_workers", None) or []:
        try:
            if w.is_alive():
                w.kill()
        except (OSError, ValueError, AssertionError):  # pragma: no cover - gone, closed, or not our child
            pass
