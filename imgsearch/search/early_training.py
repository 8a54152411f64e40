"""The IVF cells of a big first ingest, trained while its roots are planned and its rows written.

A first ingest of a million photos into an empty library ends with four IVF builds (search/vector_builds.py):
a sample read back from the store, a k-means per vector kind (~27 s of the 80 s at 1M on 2 cores), a fill.
The k-means only needs a sample, and the vectors about to be written are in the shards already. EarlyTraining
trains each kind's cells on a sample of them on a thread of its own, from the start of the ingest (before the
plan, whose scan of the roots leaves a core idle: cluster/ingest.py) and while the rows are written: one OpenMP
thread at a lower priority, in the CPU time that the planning and writing threads leave idle.
build_kinds then fills these trained indexes instead of sampling the store and training.

Only where the sample is the library's: the library held no photos before the ingest, so it will hold what
the shards hold (less any row not ingested). A wrong guess costs time, never results: the cells only partition
the space and the indexes are filled from the store as before; a trained index whose type or cell count is not
what the library's final count calls for is not used (build_kinds trains another).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Sequence

import numpy as np

from imgsearch.search.dense import IVF_TYPES, VectorIndex, choose_index_type, ivf_nlist

log = logging.getLogger(__name__)

NICE = 10   # added to the training thread's nice value: the writes come first


class EarlyTraining:
    """Trains, on a thread, one empty IVF index per kind for a library expected to hold ``expected`` vectors of
    each, on the vectors ``sample(need)`` returns ({kind: (m, dim) array} for {kind: how many it wants})."""

    def __init__(self, expected: int, sample: Callable[[dict[str, int]], dict[str, np.ndarray]],
                 kinds: Sequence[str]):
        self.index_type = choose_index_type(expected)
        self.nlist = ivf_nlist(expected)
        self.kinds = list(kinds)
        self._sample = sample
        self._trained: dict[str, VectorIndex] = {}
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.seconds = 0.0                       # the thread's time, start to end
        self._thread = threading.Thread(target=self._run, name="early-ivf-training", daemon=True)

    @classmethod
    def start(cls, expected: int, sample: Callable[[dict[str, int]], dict[str, np.ndarray]],
              kinds: Sequence[str]) -> "EarlyTraining | None":
        """A started EarlyTraining, or None where ``expected`` vectors call for no IVF index."""
        if choose_index_type(expected) not in IVF_TYPES:
            return None
        et = cls(expected, sample, kinds)
        et._thread.start()
        return et

    def result(self) -> dict[str, VectorIndex]:
        """Waits for the thread; {kind: trained empty index} (kinds whose sample fell short are left out)."""
        self._thread.join()
        if self.error is not None:
            log.warning("training the IVF cells during the ingest failed (they are trained afterwards): %s",
                        self.error)
        return dict(self._trained)

    def cancel(self) -> None:
        """No more kinds trained (the one in FAISS finishes on its daemon thread); result() is then partial."""
        self._stop.set()

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            _lower_priority(NICE)
            from imgsearch.search import faiss_lib
            faiss = faiss_lib.load()
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
        except BaseException as e:  # noqa: BLE001 - reported by result(); the build then trains as before
            self.error = e
        finally:
            self.seconds = time.monotonic() - t0


def _lower_priority(nice: int) -> None:
    """This thread's scheduling priority lowered by ``nice`` (Linux: a thread's own nice value); best effort."""
    if not sys.platform.startswith("linux"):   # elsewhere the id given to setpriority is a process's
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):   # not Linux/BSD, or not allowed: same priority
        pass
