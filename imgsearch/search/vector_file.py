"""The file a vector index is cached in: one file, replaced atomically.

File format (one file, replaced atomically: write tmp in the same folder, fsync, os.replace, fsync dir):
  b"IMGSVEC1" | uint32 little-endian header length | header JSON
    {"format": 1, "revision": ..., "count": live vectors, "dim": ..., "index_type": ..., "ntotal": ...,
     "labels": false, "faiss_bytes": n}
  | FAISS index (faiss.write_index stream). ("labels" was true for the HNSW type of format 1, since
  removed: such a file no longer loads and is rebuilt.)
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from imgsearch.files import atomic_open

MAGIC = b"IMGSVEC1"
FORMAT = 1
INDEX_TYPES = ("flat", "ivfsq8")


def write(path: str | os.PathLike, index, header: dict) -> None:
    """Stream the FAISS ``index`` into ``path`` behind ``header`` (plus format, ntotal and byte count)."""
    import faiss

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def encode(faiss_bytes: int) -> bytes:
        h = dict(header, format=FORMAT, ntotal=int(index.ntotal), labels=False, faiss_bytes=int(faiss_bytes))
        return json.dumps(h, sort_keys=True).encode()

    # The header is padded to a fixed size so it can be rewritten in place once the FAISS
    # byte count is known (the index is streamed, not copied into memory first).
    hlen = len(encode(0)) + 32
    with atomic_open(path) as f:
        f.write(MAGIC + struct.pack("<I", hlen) + encode(0).ljust(hlen))
        start = f.tell()
        writer = faiss.PyCallbackIOWriter(f.write)
        faiss.write_index(index, writer)
        del writer
        nbytes = f.tell() - start
        f.seek(len(MAGIC) + 4)
        f.write(encode(nbytes).ljust(hlen))
    _fsync_dir(path.parent)


def read_header(path: str | os.PathLike) -> dict:
    """The header of a saved index (raises ValueError/OSError if it is not one)."""
    with open(path, "rb") as f:
        return _read_header(f, Path(path))


def read(path: str | os.PathLike):
    """(header, FAISS index) of a saved file; raises (OSError, ValueError, RuntimeError) if damaged."""
    import faiss

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = _read_header(f, path)
        if h["labels"]:
            raise ValueError(f"{path}: an index of a removed type (HNSW)")
        start = f.tell()
        if start + h["faiss_bytes"] != size:
            raise ValueError(f"{path}: truncated or padded ({size} bytes, expected {start + h['faiss_bytes']})")
        reader = faiss.PyCallbackIOReader(f.read)
        index = faiss.read_index(reader)
        del reader
    return h, index


def _read_header(f, path: Path) -> dict:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise ValueError(f"{path}: not an imgsearch vector index")
    (n,) = struct.unpack("<I", f.read(4))
    if n > 1 << 20:
        raise ValueError(f"{path}: bad header length {n}")
    raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{path}: truncated header")
    h = json.loads(raw.decode())
    if h.get("format") != FORMAT:
        raise ValueError(f"{path}: format {h.get('format')!r}, this imgsearch reads {FORMAT}")
    if h.get("index_type") not in INDEX_TYPES:
        raise ValueError(f"{path}: unknown index type {h.get('index_type')!r}")
    return h


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
