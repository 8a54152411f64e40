"""Model files that imgsearch builds itself and keeps in the cache folder (the ONNX graphs of MiniLM, the
image encoder and the query scorer), each with a SHA-256 sidecar that is checked before the file is used:

    <name>.onnx           the graph
    <name>.onnx.sha256    its hex SHA-256 (and a newline)

Both are replaced atomically, the sidecar last, so a reader sees no sidecar, a stale one (the file is
rebuilt) or the matching one; a file that does not match is never loaded. Also here: the small pieces
the three builders share (exporting a torch module, opening an onnxruntime session).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from imgsearch.files import atomic_write, sha256_file


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
    data = build()
    if path is not None:
        try:
            write_verified(path, data)
        except OSError:
            pass  # read-only cache: run from memory
    return data


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
