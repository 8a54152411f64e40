"""The IVF indexes of a big first ingest, trained and filled while its roots are planned and its rows written.

A first ingest of a million photos into an empty library ends with four IVF builds (search/vector_builds.py):
a sample read back from the store, a k-means per vector kind, a fill from a scan of the whole store (at 1M on 2
cores, ~70 s of CPU reading 6 GB of vectors back out of SQLite and ~70 s adding them). The k-means only needs a
sample, and the vectors about to be written are in the shards already. EarlyTraining trains each kind's cells on
a sample of them on a thread of its own, from the start of the ingest (before the plan, whose scan of the roots
leaves a core idle: cluster/ingest.py) and while the rows are written: one OpenMP thread at a lower priority, in
the CPU time that the planning and writing threads leave idle. Then, on the same thread, it fills them: each
bulk transaction, once committed, hands it an item (``fill_later``) that ``load`` turns into the photo ids and
vectors that transaction stored (cluster/early_fill.py: read again from the shards); after the writes
(``finish``) the last items are added on every core, beside the BM25 build. build_kinds then completes these
indexes (the photos the run wrote otherwise, ``patch``, read from the store) instead of sampling, training and
scanning, or, where the fill did not happen or was given up, fills the trained cells from the store.

Only where the sample is the library's: the library held no photos before the ingest, so it will hold what
the shards hold (less any row not ingested). A wrong guess costs time, never results: the cells only partition
the space; a fill that fails or finds a shard batch not as it was written is emptied and the cells filled from
the store as before; a trained index whose type or cell count is not what the library's final count calls for is not used
(build_kinds trains another).
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from imgsearch.search.dense import IVF_TYPES, VectorIndex, choose_index_type, ivf_nlist

log = logging.getLogger(__name__)

NICE = 10   # added to the training thread's nice value: the writes come first

_END, _STOP = object(), object()   # the fill's last item given / the fill given up


class EarlyTraining:
    """Trains, on a thread, one empty IVF index per kind for a library expected to hold ``expected`` vectors of
    each, on the vectors ``sample(need)`` returns ({kind: (m, dim) array} for {kind: how many it wants}); then,
    with ``load`` given, fills them with ``load(item)`` ({kind: (ids, vectors)}) for each item given to
    fill_later, in order, until finish()."""

    def __init__(self, expected: int, sample: Callable[[dict[str, int]], dict[str, np.ndarray]],
                 kinds: Sequence[str], load: Callable[[Any], dict[str, tuple[np.ndarray, np.ndarray]]] | None = None):
        self.index_type = choose_index_type(expected)
        self.nlist = ivf_nlist(expected)
        self.kinds = list(kinds)
        self._sample = sample
        self._load = load
        self._trained: dict[str, VectorIndex] = {}
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._all_cores = threading.Event()      # the writes are done: the fill's last items on every core
        self._finished = False
        self.error: BaseException | None = None
        self.filled = False                      # every item given was added (result(): the indexes are full)
        self.patch: set[int] = set()             # photo ids the run wrote otherwise (finish)
        self.seconds = 0.0                       # the thread's time, start to end
        self.wait_s = 0.0                        # how long result() waited for it
        self._thread = threading.Thread(target=self._run, name="early-ivf-training", daemon=True)

    @classmethod
    def start(cls, expected: int, sample: Callable[[dict[str, int]], dict[str, np.ndarray]],
              kinds: Sequence[str], load=None) -> "EarlyTraining | None":
        """A started EarlyTraining, or None where ``expected`` vectors call for no IVF index."""
        if choose_index_type(expected) not in IVF_TYPES:
            return None
        et = cls(expected, sample, kinds, load)
        et._thread.start()
        return et

    def fill_later(self, item) -> None:
        """``load(item)``'s vectors added once the cells are trained (after the items given before it)."""
        self._items.put(item)

    def finish(self, patch=()) -> None:
        """No more items: the fill ends with the last one given, on every core from now on. ``patch``: the photo
        ids the run wrote other than through the items (build_kinds reads them from the store)."""
        if not self._finished:
            self._finished = True
            self.patch = set(patch)
            self._all_cores.set()
            self._items.put(_END)

    def result(self) -> dict[str, VectorIndex]:
        """Waits for the thread (finish() first, if not yet); {kind: index}, kinds whose sample fell short left
        out: filled with every item where ``self.filled``, else trained and empty."""
        self.finish(self.patch)
        t = time.monotonic()
        self._thread.join()
        self.wait_s = time.monotonic() - t
        if self.error is not None:
            log.warning("training the IVF cells during the ingest failed (they are trained afterwards): %s",
                        self.error)
        return dict(self._trained)

    def cancel(self) -> None:
        """No more kinds trained (the one in FAISS finishes on its daemon thread), no more items added; result()
        is then partial."""
        self._stop.set()
        self._items.put(_STOP)

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            _lower_priority(NICE)
            from imgsearch.search import faiss_lib
            faiss = faiss_lib.load()
            every = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)   # this thread's parallel regions only (OpenMP's setting is per thread)
            shells = {k: VectorIndex(index_type=self.index_type, nlist=self.nlist) for k in self.kinds}
            need = {k: vi.training_size() for k, vi in shells.items()}
            samples = self._sample(need)
            for kind, vi in shells.items():
                if self._stop.is_set():
                    return
                x = samples.pop(kind, None)
                if x is None or len(x) < need[kind]:
                    continue               # too few (failures, unreadable shards): trained from the store later
                vi.train(x)
                self._trained[kind] = vi
            del samples
            if self._load is not None and len(self._trained) == len(self.kinds):
                self._fill(faiss, every)
        except BaseException as e:  # noqa: BLE001 - reported by result(); the build then trains as before
            self.error = e
        finally:
            self.seconds = time.monotonic() - t0

    def _fill(self, faiss, every: int) -> None:
        """The items' vectors added, in order, until the last (``filled``); on a failure or cancel() the
        indexes are emptied (their cells kept) and the error kept for result()."""
        single = True
        try:
            while True:
                item = self._items.get()
                if item is _END:
                    self.filled = True
                    return
                if item is _STOP or self._stop.is_set():
                    break
                if single and self._all_cores.is_set():
                    faiss.omp_set_num_threads(every)
                    single = False
                for kind, (ids, vecs) in self._load(item).items():
                    if len(ids):
                        self._trained[kind].add(ids, vecs)
        except BaseException as e:  # noqa: BLE001 - the build fills the trained cells from the store instead
            log.warning("filling the IVF indexes during the ingest failed (they are filled afterwards): %s", e)
        for vi in self._trained.values():
            vi.clear()


def _lower_priority(nice: int) -> None:
    """This thread's scheduling priority lowered by ``nice`` (Linux: a thread's own nice value); best effort."""
    if not sys.platform.startswith("linux"):   # elsewhere the id given to setpriority is a process's
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):   # not Linux/BSD, or not allowed: same priority
        pass
