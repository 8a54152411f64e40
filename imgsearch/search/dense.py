"""Dense vector index (FAISS) over photo embeddings, cached in one file next to the library.

    idx = VectorIndex.open(path, revision, loader)   # load the file, or rebuild from loader() and save
    idx.add(ids, vecs); idx.remove(ids)               # upsert / delete by photo id
    ids, scores = idx.search(q, k, allowed_ids=None)  # inner product (= cosine for L2-normalised vectors)
    idx.save(revision=new_revision)

SQLite is the source of truth; this file is a cache. `loader()` yields (ids int64 (n,), vectors
float32 (n, dim)) batches read from SQLite; it is called when the file is missing, unreadable,
of another dim/type, or carries a revision other than the store's current one.

Index types (pluggable via `index_type`; `choose_index_type(count)` picks one for a library):
  "flat"    faiss.IndexIDMap2(faiss.IndexFlatIP(dim)) — exact; used below IVF_MIN vectors.
  "ivfsq8"  faiss.IndexIVFScalarQuantizer(IndexFlatIP, dim, nlist, QT_8bit, inner product):
            k-means cells (nlist ≈ 2·√N, a power of two), 8-bit codes (384 B per vector instead of
            1,536), `nprobe` cells searched (IVF_NPROBE; 1,024 cells at 1M would build in 6 s a kind
            instead of 15, but searching as many of the vectors costs ~1.5× the time of each search:
            bench/ivf_cells.py, bench/README.md). Used from IVF_MIN vectors: at 1M photos two flat
            indexes would hold 3 GB in RAM and scan 1.5 GB per query. Trained on the first
            IVF_TRAIN_PER_LIST·nlist vectors of the build; rebuilt when the index has grown
            4× past what it was trained on. Recall@10 against exact search: bench/query_latency.py.
  "ivfpq"   faiss.IndexIVFPQ(IndexFlatIP, dim, nlist, PQ_M, 8 bits, inner product): the same cells, each
            vector as PQ_M one-byte codes (96 B + an 8-byte id instead of 384 + 8: ~1/4 of IVF-SQ8's RAM
            and disk; PQ48 would halve that, but on near-duplicate-heavy libraries it needed 4× the
            re-ranked candidates for the same recall: bench/ivfpq.py). Used from PQ_MIN vectors (kept down
            to PQ_KEEP). PQ scores are coarse, so a search takes the top pq_rerank(N) candidates (200,
            more above 5M vectors: search/index_sizing.py; ``rerank`` sets a fixed depth) and re-scores
            them with their exact vectors, read by id through ``exact_vectors`` (the caches set
            it to store/vectors.read_vectors: SQLite) — the ranking and the scores returned are exact
            cosines over those candidates (without it: PQ scores). Trained on a sample of at least
            IVF_TRAIN_PER_LIST·nlist and PQ_TRAIN_MIN vectors; rebuilt when grown 4× past it, like IVF-SQ8.

The file format is in search/vector_file.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from imgsearch.search import vector_file
from imgsearch.search.index_sizing import (FLAT_MAX, IVF_MIN, IVF_TYPES, PQ_KEEP, PQ_MIN, PQ_RERANK,  # noqa: F401
                                           choose_index_type, ivf_nlist, pq_rerank)        # (re-exported here)
from imgsearch.search.shared_lock import SharedLock
from imgsearch.search.vector_file import FORMAT
from imgsearch.text import EMBED_DIM

__all__ = ["VectorIndex", "INDEX_TYPES", "FORMAT"]

log = logging.getLogger(__name__)

INDEX_TYPES = vector_file.INDEX_TYPES
EXACT_MAX = 20000  # allowed_ids sets up to this size are scored exactly by reconstruction
IVF_TRAIN_PER_LIST = 40   # k-means training vectors per cell (FAISS asks for at least 39)
IVF_KMEANS_ROUNDS = 10    # k-means iterations of the cells (bench/ivf_cells.py --rounds)
IVF_NPROBE = 128          # cells searched per query (recall@10 against exact search: bench/query_latency.py)
PQ_M = 96                 # PQ sub-quantisers (one byte each; 384 / 96 = 4 dimensions per sub-vector)
PQ_NBITS = 8              # bits per sub-quantiser code (fewer for a tiny training sample: see train())
PQ_TRAIN_MIN = 256 * 40   # training vectors the 256-centroid sub-quantisers want (FAISS: at least 39 × 256)


def _faiss():
    from imgsearch.search import faiss_lib

    return faiss_lib.load()


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vecs(vecs, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
    if v.ndim == 1:
        v = v.reshape(1, -1)
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {v.shape}")
    return v


class VectorIndex:
    """FAISS inner-product index keyed by int64 photo id."""

    def __init__(self, dim: int = EMBED_DIM, index_type: str = "flat", *, revision: Any = None,
                 path: str | os.PathLike | None = None, nlist: int = 1024, nprobe: int = IVF_NPROBE,
                 rerank: int | None = None, exact_vectors: Callable[[np.ndarray], tuple[Any, Any]] | None = None,
                 pq_m: int = PQ_M):
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, not {index_type!r}")
        self.dim = int(dim)
        self.index_type = index_type
        self.revision = revision
        self.path = Path(path) if path is not None else None
        self.nlist, self.nprobe, self.trained_on = int(nlist), int(nprobe), 0
        self.pq_m, self.pq_nbits = int(pq_m), PQ_NBITS
        self.rerank = None if rerank is None else int(rerank)   # None: pq_rerank(the index's size)
        # "ivfpq": ids (n,) -> (ids found, their exact vectors (m, dim)) for re-ranking; None: PQ scores
        self.exact_vectors = exact_vectors
        self._lock = SharedLock()  # searches run side by side (FAISS reads are thread-safe); changes alone
        self._top_id: int | None = -1  # no id added is above this (None: not known, as for a loaded index)
        faiss = _faiss()
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim)) if index_type == "flat" else self._new_ivf()

    def _new_ivf(self):
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.index_type == "ivfpq":
            return faiss.IndexIVFPQ(quantizer, self.dim, self.nlist, self.pq_m, self.pq_nbits,
                                    faiss.METRIC_INNER_PRODUCT)
        idx = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, self.nlist, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
        return idx                                  # (faiss's wrapper keeps a reference to the quantizer)

    # ------------------------------------------------------------ size / membership
    def __len__(self) -> int:
        with self._lock.shared():
            return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """Photo ids in the index (unordered)."""
        faiss = _faiss()
        with self._lock.shared():
            if self.index_type in IVF_TYPES:
                inv = self._index.invlists
                parts = [faiss.rev_swig_ptr(inv.get_ids(c), inv.list_size(c)).copy()
                         for c in range(inv.nlist) if inv.list_size(c)]
                return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def __contains__(self, photo_id: int) -> bool:
        with self._lock.shared():
            return bool(np.any(self.ids() == int(photo_id)))

    # ------------------------------------------------------------ mutation
    def add(self, ids, vectors) -> None:
        """Insert or replace vectors by photo id."""
        ids = _as_ids(ids)
        vecs = _as_vecs(vectors, self.dim)
        if len(ids) != len(vecs):
            raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids):  # keep the last vector of a repeated id
            _, last = np.unique(ids[::-1], return_index=True)
            keep = np.sort(len(ids) - 1 - last)
            ids, vecs = ids[keep], vecs[keep]
        with self._lock.exclusive():
            if self.index_type in IVF_TYPES and not self._index.is_trained:
                self.train(vecs)
            # ids above every id added so far replace nothing: a build from the store (by id) skips the search
            # for them, which scans the whole index (at 1M vectors, ~4 s of a build in batches of 8,192)
            fresh = self._top_id is not None and int(ids.min()) > self._top_id
            if self._index.ntotal and not fresh:
                self._index.remove_ids(_faiss().IDSelectorBatch(ids))
            self._index.add_with_ids(vecs, ids)
            if self._top_id is not None:
                self._top_id = max(self._top_id, int(ids.max()))

    def clear(self) -> None:
        """Every vector removed; an IVF index keeps its trained cells (add() fills it again)."""
        with self._lock.exclusive():
            self._index.reset()
            self._top_id = -1
            self.trained_on = 0

    def is_trained(self) -> bool:
        """Whether vectors can be added (an IVF index: its cells trained; flat: always)."""
        return self.index_type not in IVF_TYPES or bool(self._index.is_trained)

    def training_size(self) -> int:
        """How many sample vectors train() wants (IVF types: IVF_TRAIN_PER_LIST per cell, and PQ_TRAIN_MIN for
        IVF-PQ's codes; flat: 0)."""
        if self.index_type not in IVF_TYPES:
            return 0
        need = self.nlist * IVF_TRAIN_PER_LIST
        return max(need, PQ_TRAIN_MIN) if self.index_type == "ivfpq" else need

    def train(self, sample) -> None:
        """Fit the IVF cells (k-means) and the 8-bit quantiser (IVF-SQ8) or the product quantiser (IVF-PQ)
        on a sample of vectors (IVF types only). With fewer sample vectors than cells, the cell count shrinks
        to fit; with fewer than 4 × 256, so do the PQ codes (bits per sub-quantiser)."""
        if self.index_type not in IVF_TYPES:
            return
        x = _as_vecs(sample, self.dim)
        if len(x) == 0:
            raise ValueError("cannot train an IVF index on no vectors")
        with self._lock.exclusive():
            if self._index.ntotal:
                raise RuntimeError("the IVF index already holds vectors; build a new one to retrain")
            nlist = max(1, min(self.nlist, len(x) // 4 or 1))
            nbits = self.pq_nbits
            if self.index_type == "ivfpq":
                nbits = max(1, min(PQ_NBITS, int(np.log2(max(len(x) // 4, 2)))))
            if nlist != self.nlist or nbits != self.pq_nbits:
                self.nlist, self.pq_nbits = nlist, nbits
                self._index = self._new_ivf()
            self._index.cp.niter = IVF_KMEANS_ROUNDS
            self._index.cp.max_points_per_centroid = IVF_TRAIN_PER_LIST
            if self.index_type == "ivfpq":   # PQ_M small k-means: 10 rounds on 64 points per centroid
                self._index.pq.cp.niter = 10
                self._index.pq.cp.max_points_per_centroid = 64
                if len(x) < PQ_TRAIN_MIN:       # a small library: the sample is all there is (no warning)
                    self._index.pq.cp.min_points_per_centroid = 1
            self._index.train(x)

    def remove(self, ids) -> int:
        """Remove photo ids (missing ones are ignored); returns how many were removed."""
        ids = _as_ids(ids)
        if len(ids) == 0:
            return 0
        with self._lock.exclusive():
            if not self._index.ntotal:
                return 0
            return int(self._index.remove_ids(_faiss().IDSelectorBatch(ids)))

    # ------------------------------------------------------------ search
    def search(self, query, k: int = 10, allowed_ids: Iterable[int] | None = None):
        """Top-k by inner product.

        query (dim,) -> (ids (m,), scores (m,)) with m <= k, best first.
        query (Q, dim) -> (ids (Q, k), scores (Q, k)), rows padded with id -1 / score -inf.
        allowed_ids: only these photo ids may be returned (None = all).
        """
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        q = _as_vecs(q, self.dim)
        k = int(k)
        with self._lock.shared(), _omp_threads(1 if len(q) <= 4 else None):
            allowed = None if allowed_ids is None else np.unique(_as_ids(list(allowed_ids)
                                                                       if not isinstance(allowed_ids, np.ndarray)
                                                                       else allowed_ids))
            n = len(self)
            if k <= 0 or n == 0 or (allowed is not None and len(allowed) == 0):
                I = np.full((len(q), max(k, 0)), -1, dtype=np.int64)
                D = np.full((len(q), max(k, 0)), -np.inf, dtype=np.float32)
            elif self.index_type == "ivfsq8":
                I, D = self._search_ivf(q, k, allowed)
            elif self.index_type == "ivfpq":
                depth = pq_rerank(n) if self.rerank is None else self.rerank
                I, D = self._search_ivf(q, max(k, depth), allowed)
                I, D = self._rerank(q, I, D, k)
            elif allowed is not None and len(allowed) <= EXACT_MAX:
                I, D = self._search_exact(q, k, allowed)
            else:
                I, D = self._search_flat(q, k, allowed)
        D = D.astype(np.float32, copy=False)
        D[I < 0] = -np.inf
        if single:
            keep = I[0] >= 0
            return I[0][keep], D[0][keep]
        return I, D

    def _search_flat(self, q, k, allowed):
        faiss = _faiss()
        kk = min(k, int(self._index.ntotal))
        if allowed is None:
            D, I = self._index.search(q, kk)
        else:
            sel = faiss.IDSelectorBatch(allowed)
            D, I = self._index.search(q, kk, params=faiss.SearchParameters(sel=sel))
        return self._pad(I, D, k)

    def _search_ivf(self, q, k, allowed):
        faiss = _faiss()
        n = int(self._index.ntotal)
        kk = min(k, n)
        if allowed is None:
            params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, self.nlist))
        else:
            # a folder filter keeps a fraction of each cell: probe proportionally more cells so the
            # allowed photos still fill k results (all cells for a small set: exact over the codes)
            frac = max(len(allowed) / max(n, 1), 1e-9)
            nprobe = self.nlist if len(allowed) <= EXACT_MAX else min(self.nlist, int(self.nprobe / frac) + 1)
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=faiss.IDSelectorBatch(allowed))
        D, I = self._index.search(q, kk, params=params)
        return self._pad(I, D, k)

    def _rerank(self, q, I, D, k):
        """The top k of each row's candidates by exact inner product with their stored vectors (candidates
        whose vector is no longer stored are dropped); without ``exact_vectors``, the first k by PQ score."""
        fetch = self.exact_vectors
        cand = np.unique(I[I >= 0])
        if fetch is None or len(cand) == 0:
            return self._pad(I[:, :k], D[:, :k], k)
        got, vecs = fetch(cand)
        got = _as_ids(got)
        vecs = _as_vecs(vecs, self.dim) if len(got) else np.empty((0, self.dim), np.float32)
        order = np.argsort(got, kind="stable")
        got, vecs = got[order], vecs[order]
        outI = np.full((len(q), k), -1, dtype=np.int64)
        outD = np.full((len(q), k), -np.inf, dtype=np.float32)
        if len(got) == 0:
            return outI, outD
        for r in range(len(q)):
            row = I[r][I[r] >= 0]
            j = np.minimum(np.searchsorted(got, row), len(got) - 1)
            ok = got[j] == row
            row, j = row[ok], j[ok]
            s = vecs[j] @ q[r]
            best = np.lexsort((row, -s))[:k]  # score desc, id asc
            outI[r, :len(best)] = row[best]
            outD[r, :len(best)] = s[best]
        return outI, outD

    def _search_exact(self, q, k, allowed):
        """Exact scores over a small allowed set by reconstructing its vectors."""
        present = allowed[np.isin(allowed, self.ids())]
        vecs = (np.stack([self._index.reconstruct(int(i)) for i in present.tolist()])
                if len(present) else np.empty((0, self.dim), np.float32))
        I = np.full((len(q), k), -1, dtype=np.int64)
        D = np.full((len(q), k), -np.inf, dtype=np.float32)
        if len(present) == 0:
            return I, D
        S = q @ vecs.T  # (Q, m)
        m = min(k, len(present))
        for r in range(len(q)):
            order = np.lexsort((present, -S[r]))[:m]  # score desc, id asc
            I[r, :m] = present[order]
            D[r, :m] = S[r, order]
        return I, D

    @staticmethod
    def _pad(I, D, k):
        if I.shape[1] == k:
            return I, D
        pI = np.full((I.shape[0], k), -1, dtype=np.int64)
        pD = np.full((I.shape[0], k), -np.inf, dtype=np.float32)
        pI[:, : I.shape[1]] = I
        pD[:, : I.shape[1]] = D
        return pI, pD

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike | None = None, revision: Any = None) -> Path:
        """Write the index atomically (tmp in the same folder, fsync, os.replace); returns the path."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise ValueError("no path to save the vector index to")
        if revision is not None:
            self.revision = revision
        with self._lock.shared():
            vector_file.write(path, self._index, {
                "revision": self.revision, "count": len(self), "dim": self.dim, "index_type": self.index_type,
                "nlist": self.nlist, "nprobe": self.nprobe, "trained_on": self.trained_on})
        self.path = path
        return path

    @staticmethod
    def read_header(path: str | os.PathLike) -> dict:
        """The header of a saved index (raises ValueError/OSError if it is not one)."""
        return vector_file.read_header(path)

    @classmethod
    def load(cls, path: str | os.PathLike, **kw) -> "VectorIndex":
        """Read a saved index; raises (OSError, ValueError, RuntimeError) if missing or damaged."""
        faiss = _faiss()
        path = Path(path)
        h, index = vector_file.read(path)
        kw.setdefault("nprobe", h.get("nprobe", IVF_NPROBE))
        self = cls(dim=h["dim"], index_type=h["index_type"], revision=h["revision"], path=path,
                   nlist=h.get("nlist", 1024), **kw)
        self.trained_on = int(h.get("trained_on", 0))
        if index.d != self.dim or index.ntotal != h["ntotal"]:
            raise ValueError(f"{path}: index has d={index.d} ntotal={index.ntotal}, header says {h}")
        if h["index_type"] == "ivfsq8":
            if not isinstance(index, faiss.IndexIVFScalarQuantizer) or index.nlist != self.nlist:
                raise ValueError(f"{path}: not an IVF-SQ8 index with {self.nlist} cells")
        elif h["index_type"] == "ivfpq":
            if not isinstance(index, faiss.IndexIVFPQ) or index.nlist != self.nlist:
                raise ValueError(f"{path}: not an IVF-PQ index with {self.nlist} cells")
            self.pq_m, self.pq_nbits = int(index.pq.M), int(index.pq.nbits)
        elif not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path}: not an IndexIDMap2")
        self._index = index
        self._top_id = None   # which ids it holds is not known without reading them: add() replaces as asked
        if len(self) != h["count"]:
            raise ValueError(f"{path}: {len(self)} vectors, header says {h['count']}")
        return self

    @classmethod
    def build(cls, batches: Iterable[tuple[Any, Any]], dim: int = EMBED_DIM, index_type: str = "flat",
              revision: Any = None, count: int | None = None, sample: Callable[[int], Any] | None = None,
              **kw) -> "VectorIndex":
        """A new index from (ids, vectors) batches.

        IVF types: ``count`` (the expected number of vectors) sizes the cells; ``sample(n)`` returns
        about n vectors spread over the whole collection to train them on (default: the first
        vectors of ``batches``). The rest is added batch by batch (never all in memory)."""
        if index_type in IVF_TYPES and "nlist" not in kw:
            kw["nlist"] = ivf_nlist(count or 0)
        self = cls(dim=dim, index_type=index_type, revision=revision, **kw)
        it = iter(_iter_batches(batches))
        if index_type in IVF_TYPES:
            need = self.training_size()
            train_x = _as_vecs(sample(need), dim) if sample is not None else None
            head: list[tuple[np.ndarray, np.ndarray]] = []
            if train_x is None or len(train_x) == 0:
                have = 0
                for ids, vecs in it:
                    head.append((ids, vecs))
                    have += len(ids)
                    if have >= need:
                        break
                if have == 0:
                    return self
                train_x = np.concatenate([_as_vecs(v, dim) for _, v in head])
            self.train(train_x)
            del train_x
            for ids, vecs in head:
                self.add(ids, vecs)
        for ids, vecs in it:
            self.add(ids, vecs)
        self.trained_on = len(self)
        return self

    @classmethod
    def open(cls, path: str | os.PathLike, revision: Any, loader: Callable[[], Iterable[tuple[Any, Any]]],
             dim: int = EMBED_DIM, index_type: str | None = "flat", count: int | Callable[[], int] | None = None,
             sample: Callable[[int], Any] | None = None, **kw) -> "VectorIndex":
        """The index at path if it is readable and matches (revision, dim, index_type — None: any type);
        otherwise rebuilt from loader() and saved there (a failed save is logged, the index is still returned).
        The header is checked before the index is read, so a stale file costs no load. ``count`` (the
        number of vectors, or a function giving it, called only to rebuild) sizes the rebuilt index and,
        with index_type None, picks its type (choose_index_type)."""
        path = Path(path)
        try:
            h = cls.read_header(path)
            if h.get("revision") == revision and h.get("dim") == dim and index_type in (None, h.get("index_type")):
                return cls.load(path, **{k: v for k, v in kw.items() if k in ("nprobe", "rerank", "exact_vectors")})
            log.info("vector index %s is stale (revision %r, store %r): rebuilding", path, h.get("revision"), revision)
        except FileNotFoundError:
            log.info("vector index %s missing: building", path)
        except Exception as e:  # noqa: BLE001 - a damaged cache of any kind (OSError, ValueError, FAISS's RuntimeError, bad JSON) is rebuilt, never fatal
            log.warning("vector index %s unreadable (%s): rebuilding", path, e)
        n = count() if callable(count) else count
        idx = cls.build(loader(), dim=dim, index_type=index_type or choose_index_type(n or 0),
                        revision=revision, count=n, sample=sample, **kw)
        idx.path = path
        try:
            idx.save(path)
        except OSError as e:
            log.warning("could not save vector index %s: %s", path, e)
        return idx


@contextlib.contextmanager
def _omp_threads(n: int | None):
    """Run FAISS with ``n`` OpenMP threads inside the block (None: unchanged). A single query gains
    nothing from threads, and OpenMP's hand-off costs milliseconds on a busy 2-core machine (measured:
    bench/results/). The setting is per thread."""
    if n is None:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _iter_batches(batches) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Accept an iterable of (ids, vectors) batches, or one (ids, vectors) pair of arrays."""
    if isinstance(batches, tuple) and len(batches) == 2 and isinstance(batches[1], np.ndarray) \
            and batches[1].ndim == 2:
        yield batches[0], batches[1]
        return
    for ids, vecs in batches:
        yield ids, vecs
