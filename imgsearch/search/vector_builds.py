"""The FAISS indexes of several vector kinds built together, from one scan of the store.

Each photo row holds four vectors (~6 KB: SQLite overflow pages), so reading one kind reads the whole photos
table; at a million photos a cache built on its own counts, samples and reads that table three times
(~8 s per kind). The caches that must be rebuilt together (after a first ingest, or a library opened with its
cache files gone) read it once for all of them: one count, one sample, one scan whose batches go to every
index (the next batch read on a thread while FAISS adds this one). Each index is what VectorIndex.build makes
of its kind: the same type and cell count for the same number of vectors, trained on a sample spread over the
whole library (or cells trained already: search/early_training.py), filled by id — or, after a first ingest,
filled already during its writes (search/early_training.py) and only completed and checked here.
"""
from __future__ import annotations

from typing import Any, Sequence

from imgsearch.readahead import read_ahead
from imgsearch.search.dense import IVF_TYPES, VectorIndex, choose_index_type, ivf_nlist
from imgsearch.store import vectors as stored


def build_kinds(store, kinds: Sequence[str], revision: Any = None, trained: dict[str, VectorIndex] | None = None,
                early=None) -> dict[str, VectorIndex]:
    """{kind: a new VectorIndex of the stored vectors of that kind} for ``kinds`` (store/vectors.KINDS), from one
    scan; each of the type its count calls for (choose_index_type). ``trained``: {kind: an empty IVF index
    trained already} (search/early_training.py), filled instead of a new one where its type and cell count
    are those that count calls for. ``early``: an EarlyTraining of the run (search/early_training.py), waited
    for here: its indexes, where filled, completed (_complete_filled) instead of a scan; else its trained cells
    are ``trained``."""
    if early is not None:
        got = early.result()
        if early.filled:
            done = _complete_filled(store, kinds, got, early.patch, revision)
            if done is not None:
                return done
        trained = got
    ready = {k: vi for k, vi in (trained or {}).items() if k in kinds and _empty_ivf(vi)}
    if ready and len(ready) == len(kinds):
        return _fill_trained(store, kinds, ready, revision)
    rows_n, counts = stored.count_kinds(store, kinds)
    built: dict[str, VectorIndex] = {}
    for kind in kinds:
        given = ready.get(kind)
        if given is not None and _fits(given, counts[kind]):
            given.revision = revision
            built[kind] = given
        else:
            index_type = choose_index_type(counts[kind])
            kw = {"nlist": ivf_nlist(counts[kind])} if index_type in IVF_TYPES else {}
            built[kind] = VectorIndex(index_type=index_type, revision=revision, **kw)
    ivf = [k for k in kinds if built[k].index_type in IVF_TYPES and counts[k] and not built[k].is_trained()]
    if ivf:
        for kind, sample in stored.sample_kinds(store, ivf, {k: built[k].training_size() for k in ivf},
                                                  (rows_n, counts)).items():
            if len(sample):   # else trained on its first batch (VectorIndex.add)
                built[kind].train(sample)
    _fill(store, kinds, built)
    return built


def _fill_trained(store, kinds: Sequence[str], ready: dict[str, VectorIndex], revision: Any) -> dict[str, VectorIndex]:
    """Every kind has cells trained already (the early training of a first ingest): filled from one scan that
    counts the vectors as it goes, instead of a count of its own first (a read of every record's first page: 6 s
    at 1M). A kind whose count then calls for another type or cell count (the guess before the writes was wrong)
    is built again the usual way: a wrong guess costs time, never results."""
    held: dict[str, int] = {}
    _fill(store, kinds, ready, held)
    misfit = [k for k in kinds if not _fits(ready[k], held[k])]
    built = {k: vi for k, vi in ready.items() if k not in misfit}
    for vi in built.values():
        vi.revision = revision
    if misfit:
        built.update(build_kinds(store, misfit, revision))
    return {k: built[k] for k in kinds}


def _complete_filled(store, kinds: Sequence[str], filled: dict[str, VectorIndex], patch: set[int],
                     revision: Any) -> dict[str, VectorIndex] | None:
    """``filled`` ({kind: the IVF index filled during a first ingest with the vectors of its bulk transactions,
    each checked against the rows that transaction inserted: cluster/early_fill.py}) completed with the photos
    ``patch`` (the ids that run wrote or removed otherwise, under the same index lock: their vectors re-read from
    the store, as VectorCache.update patches a file). None where a kind is missing or an index is not of the
    type and cell count its count calls for (the guess before the writes was wrong): the indexes are then
    emptied, their cells kept, for build_kinds to fill from the store where they fit. (No count of the store
    to check against: at 1M it reads each record's first page, 22 s from a cold cache.)"""
    if not all(k in filled for k in kinds):
        return None
    ids = sorted(patch)
    for kind in kinds:
        vi = filled[kind]
        if ids:
            vi.remove(ids)
            for b_ids, b_vecs in stored.iter_vectors(store, kind, ids):
                vi.add(b_ids, b_vecs)
    if not all(_fits(filled[k], len(filled[k])) for k in kinds):
        for vi in filled.values():
            vi.clear()
        return None
    for kind in kinds:
        vi = filled[kind]
        vi.revision, vi.trained_on = revision, len(vi)
    return {k: filled[k] for k in kinds}


def _empty_ivf(vi: VectorIndex) -> bool:
    return vi.index_type in IVF_TYPES and vi.is_trained() and not len(vi)


def _fits(vi: VectorIndex, count: int) -> bool:
    """``vi`` is of the type and cell count that ``count`` vectors call for (what VectorIndex.build would make)."""
    return choose_index_type(count) == vi.index_type and ivf_nlist(count) == vi.nlist


def _fill(store, kinds: Sequence[str], built: dict[str, VectorIndex], held: dict[str, int] | None = None) -> None:
    """Add every stored vector of ``kinds`` to its index in ``built``, from one scan (``held``: store/vectors.iter_kinds)."""
    # the next batch read from the store (SQLite: outside the GIL) while FAISS adds this one
    for batch in read_ahead(stored.iter_kinds(store, kinds, held=held), depth=1, name="vector-reader"):
        for kind, (ids, vecs) in batch.items():
            if len(ids):
                built[kind].add(ids, vecs)
    for kind in kinds:
        built[kind].trained_on = len(built[kind])
