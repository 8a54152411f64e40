"""The file a vector index is cached in: one file, replaced atomically.

File format (one file, replaced atomically: write tmp in the same folder, fsync, os.replace, fsync dir):
  b"IMGSVEC1" | uint32 little-endian header length | header JSON
    {"format": 1, "revision": ..., "count": live vectors, "dim": ..., "index_type": ..., "ntotal": ...,
     "labels": false, "faiss_bytes": n, "crc32": CRC-32 of those n bytes}
  | FAISS index (faiss.write_index stream). The CRC-32 (zlib, ~6 GB/s here: 0.2 s for the three files of a
  1M-photo library) is checked as the index is read, so a file with garbled bytes inside — which FAISS would
  read without complaint, answering with wrong vectors — is rebuilt instead of used. A file without it (written
  before it was added) no longer loads and is rebuilt. ("labels" was true for the HNSW type of format 1, since
  removed: such a file no longer loads and is rebuilt.)
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

from imgsearch.files import atomic_open

MAGIC = b"IMGSVEC1"
FORMAT = 1
INDEX_TYPES = ("flat", "ivfsq8", "ivfpq")


def write(path: str | os.PathLike, index, header: dict) -> None:
    """Stream the FAISS ``index`` into ``path`` behind ``header`` (plus format, ntotal and byte count)."""
    from imgsearch.search import faiss_lib
    faiss = faiss_lib.load()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def encode(faiss_bytes: int, crc: int) -> bytes:
        h = dict(header, format=FORMAT, ntotal=int(index.ntotal), labels=False, faiss_bytes=int(faiss_bytes),
                 crc32=int(crc))
        return json.dumps(h, sort_keys=True).encode()

    # The header is padded to a fixed size so it can be rewritten in place once the FAISS
    # byte count and checksum are known (the index is streamed, not copied into memory first).
    hlen = len(encode(0, 0)) + 48
    with atomic_open(path) as f:
        f.write(MAGIC + struct.pack("<I", hlen) + encode(0, 0).ljust(hlen))
        start = f.tell()
        crc = 0

        def write_chunk(b: bytes) -> int:
            nonlocal crc
            crc = zlib.crc32(b, crc)
            return f.write(b)

        writer = faiss.PyCallbackIOWriter(write_chunk)
        faiss.write_index(index, writer)
        del writer
        nbytes = f.tell() - start
        f.seek(len(MAGIC) + 4)
        f.write(encode(nbytes, crc).ljust(hlen))
    _fsync_dir(path.parent)


def read_header(path: str | os.PathLike) -> dict:
    """The header of a saved index (raises ValueError/OSError if it is not one)."""
    with open(path, "rb") as f:
        return _read_header(f, Path(path))


def read(path: str | os.PathLike):
    """(header, FAISS index) of a saved file; raises (OSError, ValueError, RuntimeError) if damaged."""
    from imgsearch.search import faiss_lib
    faiss = faiss_lib.load()
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = _read_header(f, path)
        if h["labels"]:
            raise ValueError(f"{path}: an index of a removed type (HNSW)")
        start = f.tell()
        if start + h["faiss_bytes"] != size:
            raise ValueError(f"{path}: truncated or padded ({size} bytes, expected {start + h['faiss_bytes']})")
        crc = 0

        def read_chunk(n: int) -> bytes:
            nonlocal crc
            b = f.read(n)
            crc = zlib.crc32(b, crc)
            return b

        reader = faiss.PyCallbackIOReader(read_chunk)
        index = faiss.read_index(reader)
        del reader
        if f.tell() != size:
            raise ValueError(f"{path}: {size - f.tell()} bytes after the index")
    if crc != h["crc32"]:
        raise ValueError(f"{path}: checksum mismatch (damaged)")
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
    if not isinstance(h.get("crc32"), int):
        raise ValueError(f"{path}: no checksum (written by an older imgsearch)")
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
