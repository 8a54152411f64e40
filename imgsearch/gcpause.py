"""Python's cyclic garbage collector paused while bulk work runs, and kept out of forked children (forking).

Planning or ingesting a million photos keeps millions of small objects alive (the scan's entries, the work list,
the rows of each transaction), and each of CPython's full collections walks all of them: at 1M photos about half
of the plan's time (11.5 s → 6.2 s paused) and ~10% of an ingest's (bench/README.md, "Ingest rate"). The work
frees what it makes by reference counting; the few reference cycles it leaves are collected once the collector
runs again (peak memory measured the same either way). Not for open-ended work: a Ray job runs with it on.
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off inside the block and back as it was after it (nested blocks: on after the outermost)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def forking() -> Iterator[None]:
    """Processes forked inside the block (decode workers) start with no garbage of this one to collect: what is
    garbage now is collected here first, and what lives is frozen (gc.freeze) so that a child's collector never
    walks it. An object freed in a child runs its destructor there, without the threads it was made with: an
    onnxruntime session left in a reference cycle waited forever in a forked decode worker for its thread pool
    (found by the test suite, whose earlier tests leave such sessions). Freezing also keeps the children's
    collections from touching (and so copying) the parent's pages."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

