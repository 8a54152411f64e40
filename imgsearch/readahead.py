"""An iterator read ahead on a thread of its own: its next items are made while the consumer works on this one.

Worth it where making an item mostly runs outside the GIL (Parquet decoding, SQLite reading its pages) and the
consumer's work does too (SQLite writes, FAISS): the ingest reads its shards this way (cluster/ingest.py), and
the FAISS builds read the store's vectors while the previous batch is added (search/vector_builds.py).
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")


def read_ahead(it: Iterator[T], depth: int = 2, name: str = "read-ahead") -> Iterator[T]:
    """The items of ``it``, up to ``depth`` of them made ahead on a thread; an exception of ``it`` is raised here,
    in order. When the consumer stops (or fails) the thread stops too, and ``it`` is closed on that thread (a
    generator's ``finally`` runs where its database connection was used)."""
    q: queue.Queue = queue.Queue(depth)
    closed = threading.Event()
    end = object()

    def put(item) -> bool:
        while not closed.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for x in it:
                if not put((x, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((end, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=produce, name=name, daemon=True)
    t.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        closed.set()
