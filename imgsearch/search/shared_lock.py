"""A readers-writer lock for one vector index: searches side by side, changes alone (search/dense.py)."""
from __future__ import annotations

import contextlib
import threading


class SharedLock:
    """Readers side by side, a writer alone: ``shared()`` for searches and reads (FAISS searches on one index
    are safe from several threads at once), ``exclusive()`` for add / remove / train. Both nest within a
    thread (a read inside a read or a write, a write inside a write)."""

    def __init__(self):
        self._write = threading.RLock()     # held by a writer; a new reader passes through it
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._local = threading.local()     # this thread's read depth

    @contextlib.contextmanager
    def shared(self):
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._write, self._cond:   # waits while a writer is inside
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        mine = 1 if getattr(self._local, "depth", 0) else 0
        with self._write:
            with self._cond:
                while self._readers > mine:
                    self._cond.wait()
            yield
