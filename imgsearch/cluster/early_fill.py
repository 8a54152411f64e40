"""The vectors of a first ingest's bulk transactions, read again from the shards for the early FAISS fill.

Each bulk transaction of an ingest into an empty library (cluster/ingest.py) hands the early IVF build
(search/early_training.py) a FillItem once its COMMIT has returned: which batch of the shards it wrote, which rows
of it, and the photo ids they were given. ShardVectors, on that build's thread, reads the same batches of the
shards again (their path, labels and vector columns only: ~18 s of CPU for 1M rows, against ~70 s for the same
vectors read back from the library) and turns each item into the ids and vectors the library now holds
(cluster/bulk.py: bulk_vectors), checked against the transaction: the same paths (a fingerprint) and as many
vectors of each kind as it inserted; any difference gives the fill up (ShardsChanged: the indexes are then filled
from the store). Holding the items instead of the vectors keeps the backlog that builds up while the cells are
still being trained down to a few kilobytes a chunk.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from imgsearch.cluster import shards
from imgsearch.cluster.bulk import VECTOR_READ_COLUMNS, bulk_vectors
from imgsearch.errors import ImgsearchError
from imgsearch.store.vectors import KINDS


@dataclass(frozen=True, eq=False)
class FillItem:
    """One committed bulk transaction: photos base + 1.. base + n were written from rows ``rows`` of the
    ingest's ``batch``-th shard batch (0-based); ``paths_key``: BulkRows.paths_key() of them."""

    batch: int
    rows: np.ndarray   # (n,) int32
    base: int
    paths_key: int
    counts: tuple[int, ...]   # BulkRows.vector_counts(): the vectors of each kind it inserted


class ShardsChanged(ImgsearchError):
    """The shards no longer hold what the ingest wrote from them (the early fill is given up)."""


class ShardVectors:
    """FillItem → {kind: (photo ids, vectors)}, reading the run's shard batches in the ingest's order (items must
    come in increasing batch order: the transactions' order)."""

    def __init__(self, run_dir: str | os.PathLike, batch_rows: int):
        self._batches: Iterator = enumerate(shards.iter_batches(run_dir, batch_rows, columns=VECTOR_READ_COLUMNS))

    def __call__(self, item: FillItem) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        for k, batch in self._batches:
            if k == item.batch:
                break
            if k > item.batch:
                raise ShardsChanged(f"batch {item.batch} asked for after batch {k}")
        else:
            raise ShardsChanged(f"the shards hold no batch {item.batch}")
        if not len(item.rows) or int(item.rows.max()) >= len(batch) or hash(tuple(
                batch.column("path").take(item.rows).to_pylist())) != item.paths_key:
            raise ShardsChanged(f"batch {item.batch} of the shards is not the one the ingest wrote from")
        got = {kind: (rel + item.base, vecs) for kind, (rel, vecs) in bulk_vectors(batch, item.rows).items()}
        read = tuple(len(got[kind][0]) for kind in KINDS)
        if read != item.counts:
            raise ShardsChanged(f"batch {item.batch} of the shards gives {read} vectors of {KINDS}, its "
                                f"transaction inserted {item.counts}")
        return got
