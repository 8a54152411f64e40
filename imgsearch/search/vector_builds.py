"""The FAISS indexes of several vector kinds built together, from one scan of the store.

Each photo row holds four vectors (~6 KB: SQLite overflow pages), so reading one kind reads the whole photos
table; at a million photos a cache built on its own counts, samples and reads that table three times
(~8 s per kind). The caches that must be rebuilt together (after a first ingest, or a library opened with its
cache files gone) read it once for all of them: one count, one sample, one scan whose batches go to every
index (the next batch read on a thread while FAISS adds this one). Each index is what VectorIndex.build makes
of its kind: the same type and cell count for the same number of vectors, trained on a sample spread over the
whole library (or cells trained already: search/early_training.py), filled by id.
"""
from __future__ import annotations

from typing import Any, Sequence

from imgsearch.readahead import read_ahead
from imgsearch.search.dense import IVF_TYPES, VectorIndex, choose_index_type, ivf_nlist
from imgsearch.store import vectors as stored


def build_kinds(store, kinds: Sequence[str], revision: Any = None,
                trained: dict[str, VectorIndex] | None = None) -> dict[str, VectorIndex]:
    """{kind: a new VectorIndex of the stored vectors of that kind} for ``kinds`` (store/vectors.KINDS), from one
    scan; each of the type its count calls for (choose_index_type). ``trained``: {kind: an empty IVF index
    trained already} (search/early_training.py), filled instead of a new one where its type and cell count
    are those that count calls for."""
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
