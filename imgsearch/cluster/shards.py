"""The shard rows the Ray job writes (RUN_DIR/shards/<attempt>/*.parquet) and reading them back.

One row per photo submitted: what the manifest said about it (path, reason, photo id, size, mtime_ns at
planning), the model version, and either ``error`` (it could not be decoded or described) or the decode info
(JSON: size, mtime_ns and SHA-256 at decode time, width, height, EXIF date and GPS) and the description.
Vectors are ``fixed_size_list<float32>[384]`` (not Ray's tensor extension type: any Parquet reader reads
them), the cells and packed labels plain ``binary``. Rows are keyed on (path, content hash, model version).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imgsearch.store import writes
from imgsearch.store.models import pack_vector

log = logging.getLogger(__name__)

DIM = 384
VECTOR = pa.list_(pa.float32(), DIM)
SCORED = pa.list_(pa.struct([("text", pa.string()), ("score", pa.float64())]))

MANIFEST_SCHEMA = pa.schema([
    ("path", pa.string()),          # the library's path of the photo
    ("reason", pa.string()),        # new | changed | stale | retry | labels (indexer/plan.WorkItem.reason)
    ("photo_id", pa.int64()),       # the row at this path, if any
    ("size", pa.int64()),           # at planning
    ("mtime_ns", pa.int64()),
    ("content_hash", pa.string()),  # the stored SHA-256 when known (stale / labels / retry), else null
])

SHARD_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("reason", pa.string()),
    ("photo_id", pa.int64()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("model_version", pa.string()),
    ("content_hash", pa.string()),      # at decode (null when it could not be read)
    ("error", pa.string()),             # why it could not be decoded / described; null: described
    ("info", pa.string()),              # the decode info, JSON (indexer/loader.decode_one)
    ("captions", SCORED),
    ("tags", SCORED),
    ("keywords", pa.list_(pa.string())),
    ("caption_embedding", VECTOR),
    ("image_embedding", VECTOR),
    ("cells", pa.binary()),
    ("labels", pa.binary()),
    ("label_embedding", VECTOR),
    ("region_tags", SCORED),
    ("visual_embedding", VECTOR),
    ("labels_version", pa.string()),
    # made by the worker so that the ingest need not (store/writes.derived_rows), used only where
    # derived_version is store/writes.DERIVED_VERSION (shards of older runs lack all three: the ingest makes them)
    ("terms", pa.string()),             # the packed tag/keyword/region terms (photo_terms.terms); null: none
    ("document", pa.string()),          # the BM25 document's terms, the place left out
    ("derived_version", pa.string()),
])

KEY_COLUMNS = ["path", "size", "mtime_ns", "model_version", "content_hash", "error"]


def shard_files(run_dir: str | os.PathLike) -> list[Path]:
    """Every shard file of every attempt, oldest attempt first (attempt folders sort by their time stamp)."""
    root = Path(run_dir) / "shards"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*/*.parquet") if p.is_file())


def row_counts(run_dir: str | os.PathLike) -> tuple[list[Path], list[int]]:
    """The run's readable shard files and the rows each holds, from their footers (unreadable files left out)."""
    files, sizes = [], []
    for f in shard_files(run_dir):
        try:
            sizes.append(pq.ParquetFile(f).metadata.num_rows)
            files.append(f)
        except (OSError, pa.ArrowException):
            continue
    return files, sizes


def row_count(run_dir: str | os.PathLike) -> int:
    """The rows of the run's shards (row_counts)."""
    return sum(row_counts(run_dir)[1])


def read_keys(run_dir: str | os.PathLike) -> Iterator[dict]:
    """The key columns of every readable shard row (what a resumed run needs to know)."""
    for f in shard_files(run_dir):
        table = _read(f, KEY_COLUMNS)
        if table is not None:
            yield from table.to_pylist()


def iter_rows(run_dir: str | os.PathLike, batch_rows: int = 2048) -> Iterator[list[dict]]:
    """Every readable shard row, streamed in lists of at most ``batch_rows``, newest attempt first (so a photo
    described twice is taken from its latest attempt). A file that cannot be read (the last one of a killed
    run) is skipped with a warning: its photos have no row and are submitted again by the next run."""
    for batch in iter_batches(run_dir, batch_rows):
        yield rows_of(batch)


def iter_batches(run_dir: str | os.PathLike, batch_rows: int = 2048,
                 columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """iter_rows as Arrow record batches (the columns converted in bulk by the caller); ``columns``: only these
    read (the same batches, row for row, as without: a batch never spans two row groups)."""
    for f in reversed(shard_files(run_dir)):
        try:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield batch
        except (OSError, pa.ArrowException) as e:
            log.warning("skipping unreadable shard %s: %s", f, e)


VECTOR_COLUMNS = ("caption_embedding", "image_embedding", "label_embedding", "visual_embedding")


def rows_of(batch: pa.RecordBatch) -> list[dict]:
    """The batch as dicts, its vectors as packed float32 bytes (as the store keeps them: no Python floats)."""
    names = [n for n in VECTOR_COLUMNS if n in batch.schema.names]
    rest = batch.select([n for n in batch.schema.names if n not in names])
    rows = rest.to_pylist()
    for name in names:
        for row, v in zip(rows, vector_bytes(batch.column(name))):
            row[name] = v
    return rows


def vector_matrix(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A ``fixed_size_list<float32>[384]`` column as ((n, DIM) little-endian float32, (n,) bool: not null); a
    null row's values are whatever the column holds there."""
    n = len(col)
    vals = np.asarray(col.values.slice(col.offset * DIM, n * DIM).to_numpy(zero_copy_only=False), dtype="<f4")
    return vals.reshape(n, DIM), np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _none_where_null(out: list, valid: np.ndarray) -> list:
    """``out`` with None at the rows that ``valid`` (bool, one a row) says are null."""
    if not valid.all():
        for i in np.flatnonzero(~valid).tolist():
            out[i] = None
    return out


def vector_bytes(col: pa.Array) -> list[bytes | None]:
    """A ``fixed_size_list<float32>[384]`` column as packed little-endian float32 bytes (None where null)."""
    vals, valid = vector_matrix(col)
    # one bytes object a row, made in C
    return _none_where_null(np.ascontiguousarray(vals).view(f"V{DIM * 4}").ravel().tolist(), valid)


def vector_views(col: pa.Array) -> list[memoryview | None]:
    """vector_bytes without the copies: each row's float32 bytes as a memoryview into one buffer (made from the
    column, little-endian; None where null). SQLite binds any buffer as a BLOB, so the bulk inserts take these
    as they are, and a row's 1.5 KB are copied once (by SQLite) instead of first into a bytes object of its own
    (at 1M rows, four vectors a row: ~9 s of the writer's thread here)."""
    vals, valid = vector_matrix(col)
    size = DIM * 4
    flat = memoryview(np.ascontiguousarray(vals, dtype="<f4")).cast("B")
    return _none_where_null([flat[a:a + size] for a in range(0, len(vals) * size, size)], valid)


def binary_views(col: pa.Array) -> list[memoryview | None]:
    """A binary column's values as memoryviews into its data buffer (None where null): to_pylist without a bytes
    object made and copied for each (the cells: 12.6 KB a row)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        return col.to_pylist()
    n = len(col)
    bufs = col.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64 if pa.types.is_large_binary(col.type) else np.int32,
                            count=col.offset + n + 1)[col.offset:].tolist()
    data = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")
    out = [data[a:b] for a, b in zip(offsets, offsets[1:])]
    if not col.null_count:
        return out
    return _none_where_null(out, np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool))


def sample_vectors(run_dir: str | os.PathLike, need: dict[str, int], version: str) -> dict[str, np.ndarray]:
    """{kind (store/vectors.KINDS): about need[kind] of the run's vectors of that kind, (m, DIM) float32}, from
    described rows of ``version``, spread over the run: shard files evenly spaced over all of them, as many as
    hold a quarter more rows than the largest need (their footers say how many rows each has; twice as many
    files while a kind is still short), then rows evenly spaced over what was read. Only the vector columns are
    read. Unreadable files are skipped (fewer vectors: the caller checks)."""
    import pyarrow.compute as pc

    from imgsearch.store.vectors import _COLUMN

    files, sizes = row_counts(run_dir)
    total, want = sum(sizes), max(need.values(), default=0)
    parts: dict[str, dict[int, np.ndarray]] = {k: {} for k in need}   # kind -> {file position: its vectors}
    columns = [_COLUMN[k] for k in need]
    read: set[int] = set()
    n_pick = max(1, round(min(1.0, 1.25 * want / max(total, 1)) * len(files)))
    while files and want:
        for i in sorted(set(np.linspace(0, len(files) - 1, n_pick).astype(int).tolist()) - read):
            read.add(i)
            t = _read(files[i], ["model_version", "error", *columns])
            if t is None:
                continue
            good = np.asarray(pc.and_(pc.equal(t.column("model_version"), version),
                                      pc.is_null(t.column("error"))).to_numpy(zero_copy_only=False), dtype=bool)
            for kind, name in zip(need, columns):
                vals, valid = vector_matrix(t.column(name).combine_chunks())
                parts[kind][i] = vals[good & valid].astype(np.float32, copy=False)
        short = any(sum(map(len, parts[k].values())) < need[k] for k in need)
        if not short or len(read) == len(files):
            break
        n_pick = min(len(files), 2 * n_pick)
    out = {}
    for kind, by_file in parts.items():
        v = (np.concatenate([by_file[i] for i in sorted(by_file)]) if by_file
             else np.empty((0, DIM), np.float32))                      # in the run's order
        out[kind] = v[np.linspace(0, len(v) - 1, need[kind]).astype(np.int64)] if len(v) > need[kind] else v
    return out


def flat_lists(col: pa.Array) -> tuple[np.ndarray, list]:
    """A list column as (row offsets into the flat values, n + 1 of them; the flat values as Python objects:
    plain values, or for a list of structs one Python list per struct field). A null list counts as empty."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(col) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(col)
    if pa.types.is_struct(flat.type):
        return offsets, [f.to_pylist() for f in flat.flatten()]
    return offsets, flat.to_pylist()


def _read(f: Path, columns: list[str]):
    try:
        return pq.read_table(f, columns=columns)
    except (OSError, pa.ArrowException) as e:
        log.warning("skipping unreadable shard %s: %s", f, e)
        return None


# ---------------------------------------------------------------------------- rows ↔ descriptions

def _vec(v) -> list[float] | None:
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float32).reshape(-1)
    if a.shape[0] != DIM:
        raise ValueError(f"a vector of {a.shape[0]} values, the shards hold {DIM}")
    return a.tolist()


def _scored(pairs) -> list[dict]:
    return [{"text": str(t), "score": float(s)} for t, s in pairs]


def described_row(base: dict, info: dict, d, caption_vec, labels_version: str) -> dict:
    """A shard row for a photo the captioner described (``d``: model/captioner.Description)."""
    has_labels = getattr(d, "labels", None) is not None
    captions, tags, keywords = _scored(d.captions), _scored(d.tags), [str(k) for k in d.keywords]
    region = _scored(d.region_tags) if has_labels else []
    terms, document = writes.derived_rows([c["text"] for c in captions], [(t["text"], t["score"]) for t in tags],
                                          keywords, [(t["text"], t["score"]) for t in region])
    return {**base, "content_hash": info["content_hash"], "error": None, "info": json.dumps(info),
            "captions": captions, "tags": tags, "keywords": keywords,
            "caption_embedding": _vec(caption_vec), "image_embedding": _vec(getattr(d, "image_embedding", None)),
            "cells": getattr(d, "cells", None), "labels": d.labels if has_labels else None,
            "label_embedding": _vec(d.label_embedding) if has_labels else None,
            "region_tags": region,
            "visual_embedding": _vec(getattr(d, "visual_embedding", None)) if has_labels else None,
            "labels_version": labels_version if has_labels else None,
            "terms": terms, "document": document, "derived_version": writes.DERIVED_VERSION}


def failed_row(base: dict, error: str, info: dict | None = None) -> dict:
    """A shard row for a photo that could not be decoded or described."""
    info = info or {}
    return {**base, "content_hash": info.get("content_hash"), "error": error,
            "info": json.dumps(info) if info else None, "captions": [], "tags": [], "keywords": [],
            "caption_embedding": None, "image_embedding": None, "cells": None, "labels": None,
            "label_embedding": None, "region_tags": [], "visual_embedding": None, "labels_version": None,
            "terms": None, "document": None, "derived_version": None}


def to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


def _packed(v) -> bytes | None:
    """A vector of a row, as float32 bytes (rows read by iter_rows already hold bytes)."""
    return v if v is None or isinstance(v, bytes) else pack_vector(v)


def _array(v) -> np.ndarray | None:
    if v is None:
        return None
    return np.frombuffer(v, dtype="<f4") if isinstance(v, bytes) else np.asarray(v, dtype=np.float32)


def labels_tuple(row: dict):
    """(packed, label vector, region tags, visual vector) as the runner's label step gives them, or None."""
    if row.get("labels") is None:
        return None
    return (row["labels"], _array(row["label_embedding"]), [(r["text"], r["score"]) for r in row["region_tags"]],
            _array(row["visual_embedding"]))


def description(row: dict) -> writes.Description:
    """The stored form of a described row (what IndexRunner._describe would have made of it)."""
    from imgsearch.model.labels import LABELS_VERSION

    labels = None
    if row.get("labels") is not None:
        labels = writes.Labels(row["labels"], _packed(row["label_embedding"]),
                               [(r["text"], r["score"]) for r in row["region_tags"]],
                               row["labels_version"] or LABELS_VERSION, _packed(row["visual_embedding"]))
    return writes.Description(
        [(c["text"], c["score"]) for c in row["captions"]], [(t["text"], t["score"]) for t in row["tags"]],
        list(row["keywords"]), _packed(row["caption_embedding"]), _packed(row["image_embedding"]),
        row["cells"], labels)
