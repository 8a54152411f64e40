"""Model files that imgsearch builds itself and keeps in the cache folder (the ONNX graphs of MiniLM, the
image encoder and the query scorer), each with a SHA-256 sidecar that is checked before the file is used:

    <name>.onnx           the graph
    <name>.onnx.sha256    its hex SHA-256 (and a newline)

Both are replaced atomically, the sidecar last, so a reader sees no sidecar, a stale one (the file is
rebuilt) or the matching one; a file that does not match is never loaded. A file that matches but does
not load (its sidecar was written for bad bytes, or onnxruntime refuses it) is removed and built again
from its source weights, once (:func:`open_cached`). Also here: the small pieces the three builders share
(exporting a torch module, opening an onnxruntime session).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, TypeVar

from imgsearch.files import atomic_write, sha256_file

log = logging.getLogger(__name__)
T = TypeVar("T")


def sidecar(path: str | os.PathLike) -> Path:
    """Where the SHA-256 of ``path`` is kept: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_verified(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, then its sidecar. OSError when the folder is not writable."""
    atomic_write(path, data)
    atomic_write(sidecar(path), hashlib.sha256(data).hexdigest() + "\n")
    return Path(path)


def read_verified(path: str | os.PathLike) -> Path | None:
    """``path`` when it exists and its SHA-256 is the one in its sidecar; else None (missing, unreadable,
    no sidecar, or damaged)."""
    path = Path(path)
    try:
        want = sidecar(path).read_text().strip()
        return path if want and sha256_file(path) == want else None
    except OSError:
        return None


def load_or_build(path: Path | None, build: Callable[[], bytes],
                  on_damaged: Callable[[Path], None] | None = None) -> Path | bytes:
    """The verified file at ``path``; else ``build()``'s bytes, written to ``path`` (with its sidecar) when
    the cache can be written. ``path`` None: always build, keep nothing. ``on_damaged(path)`` is told when a
    file is there but does not verify (before it is rebuilt)."""
    if path is not None:
        found = read_verified(path)
        if found is not None:
            return found
        if on_damaged is not None and path.exists():
            on_damaged(path)
    return _build_and_keep(path, build)


def _build_and_keep(path: Path | None, build: Callable[[], bytes]) -> bytes:
    data = build()
    if path is not None:
        try:
            write_verified(path, data)
        except OSError:
            pass  # read-only cache: run from memory
    return data


def discard(path: str | os.PathLike, *also: str) -> None:
    """Remove a cached file, its sidecar and the files ``<path><suffix>`` for each of ``also`` (best
    effort: a read-only cache keeps them, and they are simply not used)."""
    path = Path(path)
    for p in (path, sidecar(path), *(path.with_name(path.name + s) for s in also)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.debug("cannot remove %s: %s", p, e)


def load_error(e: BaseException) -> str:
    """One short line for why a cached file did not load (onnxruntime's messages run long)."""
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    msg = msg if len(msg) <= 200 else msg[:197] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def open_cached(path: Path | None, build: Callable[[], bytes], open_model: Callable[[Path | bytes], T],
                what: str = "model") -> T:
    """``open_model`` over the verified file at ``path`` (see :func:`load_or_build`). A cached file that
    verifies but does not open (``open_model`` raises) is removed and built again by ``build()``, once,
    with a warning; what fails to open after a fresh build is the builder's error and propagates.
    ``what`` names the artifact in the warnings."""
    model = load_or_build(path, build,
                          lambda p: log.warning("cached %s %s is damaged: building it again", what, p))
    if not isinstance(model, Path):
        return open_model(model)
    try:
        return open_model(model)
    # broad: onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...) for a bad file
    except Exception as e:  # noqa: BLE001
        log.warning("cached %s %s does not load (%s): building it again", what, model, load_error(e))
    discard(model)
    return open_model(_build_and_keep(model, build))


def export_torch(module, args: tuple, **kw) -> bytes:
    """``torch.onnx.export`` of ``module`` on ``args`` (opset 17, TorchScript exporter) to bytes, with the
    exporter's warnings and stderr chatter kept off the user's terminal. ``kw``: input_names, output_names,
    dynamic_axes."""
    import contextlib
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, opset_version=17, dynamo=False, **kw)
    return buf.getvalue()


def ort_session(model: Path | bytes, threads: int, *, log_severity: int | None = None,
                config: dict[str, str] | None = None):
    """An onnxruntime CPU session over a model file or its bytes: ``threads`` intra-op threads, one inter-op
    thread, full graph optimisation; ``log_severity`` (3: errors only) and session ``config`` entries."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if log_severity is not None:
        so.log_severity_level = log_severity
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
