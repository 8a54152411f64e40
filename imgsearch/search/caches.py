"""The search caches of one library: a FAISS file per vector kind and the BM25 score cache.

SQLite is the source of truth; each cache file names the library (its random id) and the store revision it
matches (store.cache_key) and is rebuilt from the store when it does not match, cannot be read, holds another
number of vectors than the store (checked after every index run), or is of the wrong type. All three have the same small
interface:

    cache.get()                   # the cache at the store's current revision (loaded or rebuilt)
    cache.update(rev0, touched)   # after an index run that started at rev0 and changed these photo ids
    cache.rebuild()               # from the store, whatever the file holds

:class:`SearchCaches` holds the three and is what the library and the query engine use.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from imgsearch import paths
from imgsearch.indexer.lock import index_running
from imgsearch.search import bm25
from imgsearch.search.bm25_cache import BM25Cache
from imgsearch.search.dense import VectorIndex, choose_index_type
from imgsearch.store import vectors as stored
from imgsearch.text import EMBED_DIM

log = logging.getLogger(__name__)

BM25_CACHE_MIN = 50_000   # photos from which BM25 is answered from precomputed scores (FTS5 below)
FAISS_FILES = {"caption": paths.captions_faiss_path, "image": paths.images_faiss_path,   # vector kind → its file
               "labels": paths.labels_faiss_path, "visual": paths.visual_faiss_path}
PATCH_MAX = 50_000        # more photos changed by one run than this: rebuild the FAISS file instead of patching it


class VectorCache:
    """The FAISS index over one kind of stored vector ("caption" or "image"), cached in one file."""

    read_from: Path | None = None    # a read-only library's own file: used when current (``path`` is in the user cache)

    def __init__(self, store, path: Path, kind: str, lock: threading.RLock,
                 indexing: Callable[[], bool] = lambda: False):
        self.store, self.path, self.kind = store, Path(path), kind
        self._lock = lock
        self._indexing = indexing    # whether an index run (another process) is writing the library now
        self._held = None            # (revision, VectorIndex)

    def get(self):
        """The index at the store's current revision: the file if it matches, else rebuilt and saved.
        Concurrent queries read the held index without the lock; only loading it takes the lock.

        While an index run is writing the library, its batches move the revision on every few seconds, and
        rebuilding from SQLite each time would make every query wait (20 s at 1M photos). So meanwhile a
        query answers from the index it holds (or the file, which the run brings up to date when it ends) as
        long as it is this library's: the photos the run adds are found once it finishes; photos it removes
        are never shown (hits are read from SQLite)."""
        rev = self.store.cache_key()
        held = self._held
        if held is not None and held[0] == rev:
            return held[1]
        if _same_library(held[0] if held else None, rev) and self._indexing():
            return held[1]
        if held is None and self._indexing() and (vi := self._this_librarys_file(rev)) is not None:
            self._held = (vi.revision, vi)
            return vi
        return self._current()

    def _this_librarys_file(self, rev: str):
        """The saved index if it is this library's (at any revision), else None."""
        try:
            if not _same_library(VectorIndex.read_header(self.path).get("revision"), rev):
                return None
            return self._exact(VectorIndex.load(self.path))
        except Exception:  # noqa: BLE001 - missing or damaged: the caller rebuilds
            return None

    def _current(self):
        """The index at the store's current revision, loaded or rebuilt under the lock."""
        with self._lock:
            rev = self.store.cache_key()
            if self._held is not None and self._held[0] == rev:
                return self._held[1]
            vi = self._open(rev)
            self._held = (rev, vi)
            return vi

    def forget(self) -> None:
        """Drop the index held in memory (the file stays)."""
        self._held = None

    def rebuild(self):
        with self._lock:
            self._held = None
            self.path.unlink(missing_ok=True)
            return self._current()

    def _open(self, rev: str, index_type: str | None = None):
        """The file if it is at ``rev`` (and of ``index_type``, when given), else rebuilt from the store —
        flat, IVF-SQ8 for large libraries, IVF-PQ (re-ranked with the stored vectors) for very large ones
        (dense.choose_index_type) — and saved."""
        if self.read_from is not None and (own := _current_file(self.read_from, rev, index_type)) is not None:
            return self._exact(own)
        counted: list[int] = []

        def count() -> int:   # counting a million rows costs about a second: only when a rebuild needs it, once
            if not counted:
                counted.append(stored.count_vectors(self.store, self.kind))
            return counted[0]

        return VectorIndex.open(self.path, rev, lambda: stored.iter_vectors(self.store, self.kind), dim=EMBED_DIM,
                                index_type=index_type, count=count,
                                sample=lambda m: stored.sample_vectors(self.store, self.kind, m, count()),
                                exact_vectors=self._read_exact)

    def needs_rebuild(self, rev0: str | None = None, touched: set[int] = frozenset()) -> bool:
        """Whether update(rev0, touched) — get() with ``rev0`` None — would rebuild this cache from the store: it
        holds no index at the store's revision, its file (nor a read-only library's own) is not at it, and the
        file cannot be patched instead (at ``rev0``, fewer than PATCH_MAX photos changed). Headers only."""
        rev = self.store.cache_key()
        if self._held is not None and self._held[0] == rev:
            return False
        if rev0 is None and self._indexing():   # get() answers from what it holds meanwhile (or rebuilds alone)
            return False
        for path in (self.path, self.read_from):
            try:
                file_rev = VectorIndex.read_header(path).get("revision") if path is not None else None
            except Exception:  # noqa: BLE001 - missing or damaged: rebuilt
                continue
            if file_rev == rev or (path == self.path and _patchable(file_rev, rev0, rev, touched)):
                return False
        return True

    def adopt(self, rev: str, vi) -> None:
        """Hold ``vi`` (built from the store at ``rev``: vector_builds) as this cache, saved to its file."""
        with self._lock:
            vi = self._exact(vi)
            try:
                vi.save(self.path, revision=rev)
            except OSError as e:
                vi.revision = rev
                log.warning("could not save vector index %s: %s", self.path, e)
            self._held = (rev, vi)

    def _read_exact(self, ids):
        """The stored vectors of ``ids`` (an IVF-PQ index re-ranks its candidates with them)."""
        return stored.read_vectors(self.store, self.kind, ids)

    def _exact(self, vi):
        vi.exact_vectors = self._read_exact
        return vi

    def update(self, rev0: str, touched: set[int]) -> None:
        """After an index run: apply its changes to the file if it was current at ``rev0`` (cheap), else
        rebuild it from the store. Saved atomically with the new revision. An index that grew past (or
        shrank below) what its type suits is rebuilt as the right type."""
        with self._lock:
            self._held = None
            rev = self.store.cache_key()
            try:
                file_rev = VectorIndex.read_header(self.path).get("revision")
            except Exception:  # noqa: BLE001 - a missing or damaged file of any kind is rebuilt below
                file_rev = None
            vi = None
            if _patchable(file_rev, rev0, rev, touched):
                try:
                    vi = self._exact(VectorIndex.load(self.path))
                except Exception:  # noqa: BLE001 - a damaged file of any kind is rebuilt below
                    vi = None
            if vi is None or vi.dim != EMBED_DIM:
                self._current()  # current already, or rebuilt from the store
                return
            ids = sorted(touched)
            vi.remove(ids)
            for b_ids, b_vecs in stored.iter_vectors(self.store, self.kind, ids):
                vi.add(b_ids, b_vecs)
            have = stored.count_vectors(self.store, self.kind)
            if len(vi) != have:   # the file was not what its header claimed: never patch a wrong cache
                log.warning("%s holds %d vectors, the library %d: rebuilt", self.path.name, len(vi), have)
                self.path.unlink(missing_ok=True)
                self._held = (rev, self._open(rev))
                return
            outgrown = vi.index_type != "flat" and len(vi) > 4 * max(vi.trained_on, 1)   # IVF-SQ8 or IVF-PQ
            want = choose_index_type(len(vi), None if outgrown else vi.index_type)
            if want != vi.index_type or outgrown:   # the file is still at rev0: _open() rebuilds it
                vi = self._open(rev, want)
            else:
                try:
                    vi.save(self.path, revision=rev)
                except OSError:  # read-only folder: the in-memory index is still right
                    vi.revision = rev
            self._held = (rev, vi)


def _patchable(file_rev: object, rev0: str | None, rev: str, touched: set[int]) -> bool:
    """Whether a FAISS file at ``file_rev`` can be patched to ``rev`` after an index run that started at ``rev0``
    and changed the photos ``touched`` (else it is rebuilt from the store)."""
    return rev0 is not None and file_rev == rev0 != rev and len(touched) < PATCH_MAX


def _same_library(key: object, current: str) -> bool:
    """Whether a cache key (store.cache_key: "<library id>@<revision>") names the library of ``current``."""
    return isinstance(key, str) and key.split("@", 1)[0] == current.split("@", 1)[0]


class BM25ScoreCache:
    """Precomputed BM25 scores (search/bm25_cache.BM25Cache) for libraries of BM25_CACHE_MIN photos or
    more; below that (or when the file is not at the store's revision) FTS5 answers."""

    read_from: Path | None = None    # as VectorCache.read_from

    def __init__(self, store, path: Path, lock: threading.RLock):
        self.store, self.path = store, Path(path)
        self._lock = lock
        self._held = None            # (revision, BM25Cache or None)

    def get(self):
        """The cache when its file is at the store's revision, else None (read without the lock when held)."""
        rev = self.store.cache_key()
        held = self._held
        if held is not None and held[0] == rev:
            return held[1]
        with self._lock:
            rev = self.store.cache_key()
            if self._held is not None and self._held[0] == rev:
                return self._held[1]
            cache = BM25Cache.open(self.read_from, rev) if self.read_from is not None and self.read_from.exists() else None
            if cache is None:
                cache = BM25Cache.open(self.path, rev) if self.path.exists() else None
            self._held = (rev, cache)
            return cache

    def update(self, rev0: int | None = None, touched: set[int] | None = None) -> None:
        """Rebuild (or remove) the cache file so that it matches the store's current revision."""
        self._refresh(force=False)

    def forget(self) -> None:
        """Drop the cache held in memory (the file stays)."""
        self._held = None

    def rebuild(self):
        self._refresh(force=True)
        return self.get()

    def _refresh(self, force: bool) -> None:
        Path(f"{self.path}.npz").unlink(missing_ok=True)   # the format before memory-mapping
        with self._lock:
            self._held = None
            rev = self.store.cache_key()
            with self.store.engine.connect() as conn:
                if bm25.count(conn) < BM25_CACHE_MIN:
                    self.path.unlink(missing_ok=True)
                    return
                try:
                    if not force and BM25Cache.read_revision(self.path) == rev:
                        return
                except Exception:  # noqa: BLE001 - missing or damaged: rebuilt here
                    pass
                cache = BM25Cache.build(conn, revision=rev)
            try:
                cache.save(self.path)
            except OSError as e:
                log.warning("could not save the BM25 cache %s: %s", self.path, e)
                return
            self._held = (rev, cache)


def _current_file(path: Path, rev, index_type: str | None):
    """The index saved at ``path`` if it is at ``rev`` (and of ``index_type``, when given), else None."""
    try:
        h = VectorIndex.read_header(path)
        if h.get("revision") == rev and h.get("dim") == EMBED_DIM and index_type in (None, h.get("index_type")):
            return VectorIndex.load(path)
    except Exception:  # noqa: BLE001 - missing or damaged: the user cache's copy or a rebuild answers
        pass
    return None


class SearchCaches:
    """The derived files of one library, each keyed by the library's id and the store's revision."""

    def __init__(self, store, db_path: Path):
        self._lock = threading.RLock()
        own = Path(db_path)
        if getattr(store, "read_only", False):   # read-only library: its own files are read when current,
            db_path = paths.user_cache_dir(own) / own.name   # what is built goes to its user cache folder
        indexing = functools.partial(index_running, own)
        self.vectors = {kind: VectorCache(store, name(db_path), kind, self._lock, indexing)
                        for kind, name in FAISS_FILES.items()}
        # a lock of its own: rebuilt beside the FAISS files (update), it never waits for them
        self.bm25 = BM25ScoreCache(store, paths.bm25_cache_path(db_path), threading.RLock())
        if Path(db_path) != own:
            for kind, name in FAISS_FILES.items():
                self.vectors[kind].read_from = name(own)
            self.bm25.read_from = paths.bm25_cache_path(own)

    def vector_index(self, kind: str):
        """The FAISS index of ``kind`` (store/vectors.KINDS) at the store's current revision."""
        return self.vectors[kind].get()

    def bm25_cache(self):
        """The BM25 score cache at the store's current revision, or None (FTS5 answers)."""
        return self.bm25.get()

    def update(self, rev0: str, touched: set[int], early=None) -> dict[str, float]:
        """After an index run that started at ``rev0`` (store.cache_key()) and changed the photos ``touched``:
        the BM25 cache on a thread while the FAISS files are brought up to date here (its Python and SQLite reads
        fill the core that the FAISS files' scans leave idle: at 1M, 6 s hidden). ``early``: the IVF indexes
        trained (and filled) during the run (search/early_training.EarlyTraining), for the files rebuilt
        (vector_builds.build_kinds). Returns the seconds each took ({"faiss_s", "bm25_s"}, overlapping)."""
        from concurrent.futures import ThreadPoolExecutor

        def bm25_update() -> float:
            t = time.monotonic()
            self.bm25.update(rev0, touched)
            return time.monotonic() - t

        with ThreadPoolExecutor(1, thread_name_prefix="bm25-cache") as pool:   # its exit waits for the thread
            bm25 = pool.submit(bm25_update)
            t = time.monotonic()
            self.update_vectors(rev0, touched, early)   # an error here is the one raised
            faiss_s = time.monotonic() - t
        return {"faiss_s": faiss_s, "bm25_s": bm25.result()}   # else the BM25 cache's, if any

    def update_vectors(self, rev0: str, touched: set[int], early=None) -> None:
        """The FAISS caches after an index run (VectorCache.update); those that must be rebuilt from the
        store, rebuilt together from one scan of it (vector_builds; ``early``: see update)."""
        done = self._rebuild_together(rev0, touched, early)
        for cache in self.vectors.values():
            if cache not in done:
                cache.update(rev0, touched)

    def refresh(self) -> None:
        """Bring every cache up to the store's revision (rebuilt from the store when stale)."""
        self._rebuild_together(None, set())
        for cache in self.vectors.values():
            cache.get()
        self.bm25.update()

    def _rebuild_together(self, rev0: str | None, touched: set[int], early=None) -> list[VectorCache]:
        """The vector caches that update(rev0, touched) would each rebuild from the store, when there are two or
        more: built from one scan and adopted; returns them (none: each cache does its own work)."""
        from imgsearch.search.vector_builds import build_kinds

        with self._lock:
            stale = [c for c in self.vectors.values() if c.needs_rebuild(rev0, touched)]
            if len(stale) < 2:
                return []
            store = stale[0].store
            rev = store.cache_key()
            built = build_kinds(store, [c.kind for c in stale], rev, early=early)
            for cache in stale:
                cache.adopt(rev, built[cache.kind])
            return stale

    def clear(self) -> None:
        """Forget what is held in memory (the files stay)."""
        with self._lock:
            for cache in (*self.vectors.values(), self.bm25):
                cache.forget()
