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
            1,536), `nprobe` cells searched. Used from IVF_MIN vectors: at 1M photos two flat
            indexes would hold 3 GB in RAM and scan 1.5 GB per query. Trained on the first
            IVF_TRAIN_PER_LIST·nlist vectors of the build; rebuilt when the index has grown
            4× past what it was trained on. Recall@10 against exact search: bench/query_latency.py.
  "hnsw"    faiss.IndexHNSWFlat(dim, M, METRIC_INNER_PRODUCT) with our own internal->photo id labels;
            removals are tombstones (filtered at search, compacted when > 25 % are dead). Kept for
            the benchmark's comparison (full float vectors plus links: larger than flat).

File format (one file, replaced atomically: write tmp in the same folder, fsync, os.replace, fsync dir):
  b"IMGSVEC1" | uint32 little-endian header length | header JSON
    {"format": 1, "revision": ..., "count": live vectors, "dim": ..., "index_type": ..., "ntotal": ...,
     "labels": bool, "faiss_bytes": n}
  | [hnsw only: labels .npy (int64, -1 = removed)] | FAISS index (faiss.write_index stream).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from imgsearch.files import atomic_open

__all__ = ["VectorIndex", "INDEX_TYPES", "FORMAT"]

log = logging.getLogger(__name__)

MAGIC = b"IMGSVEC1"
FORMAT = 1
INDEX_TYPES = ("flat", "hnsw", "ivfsq8")
_BRUTE_FORCE_MAX = 20000  # allowed_ids sets up to this size are scored exactly by reconstruction
IVF_MIN = 200_000         # a flat index of this many vectors becomes IVF-SQ8 (at the next save)...
FLAT_MAX = 100_000        # ...and an IVF index shrunk below this becomes flat again (hysteresis)
IVF_TRAIN_PER_LIST = 40   # k-means training vectors per cell (FAISS asks for at least 39)
IVF_NPROBE = 128          # cells searched per query: recall@10 vs exact at 1M (bench/query_latency.py) 0.956 caption, 0.97+ image


def choose_index_type(count: int, current: str | None = None) -> str:
    """The index type for ``count`` vectors; ``current`` is kept inside the hysteresis band."""
    if count >= IVF_MIN:
        return "ivfsq8"
    if count < FLAT_MAX:
        return "flat"
    return current if current in ("flat", "ivfsq8") else "flat"


def ivf_nlist(count: int) -> int:
    """Number of IVF cells for ``count`` vectors: the power of two nearest 2·√count (at least 64)."""
    import math

    target = max(64.0, 2.0 * math.sqrt(max(count, 1)))
    return 1 << int(round(math.log2(target)))


def _faiss():
    import faiss

    return faiss


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

    def __init__(self, dim: int = 384, index_type: str = "flat", *, revision: Any = None,
                 path: str | os.PathLike | None = None, hnsw_m: int = 32, ef_construction: int = 80,
                 ef_search: int = 128, nlist: int = 1024, nprobe: int = IVF_NPROBE):
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, not {index_type!r}")
        self.dim = int(dim)
        self.index_type = index_type
        self.revision = revision
        self.path = Path(path) if path is not None else None
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.nlist, self.nprobe, self.trained_on = int(nlist), int(nprobe), 0
        self._lock = threading.RLock()
        faiss = _faiss()
        if index_type == "flat":
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            self._labels = None
        elif index_type == "ivfsq8":
            self._index = self._new_ivf()
            self._labels = None
        else:
            self._index = self._new_hnsw()
            self._labels = np.empty(0, dtype=np.int64)  # internal position -> photo id (-1 = removed)
            self._pos: dict[int, int] = {}               # live photo id -> internal position

    def _new_ivf(self):
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(self.dim)
        idx = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, self.nlist, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
        return idx                                  # (faiss's wrapper keeps a reference to the quantizer)

    def _new_hnsw(self):
        faiss = _faiss()
        idx = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = self.ef_construction
        idx.hnsw.efSearch = self.ef_search
        return idx

    # ------------------------------------------------------------ size / membership
    def __len__(self) -> int:
        with self._lock:
            if self._labels is None:
                return int(self._index.ntotal)
            return len(self._pos)

    def ids(self) -> np.ndarray:
        """Photo ids in the index (unordered)."""
        faiss = _faiss()
        with self._lock:
            if self.index_type == "ivfsq8":
                inv = self._index.invlists
                parts = [faiss.rev_swig_ptr(inv.get_ids(c), inv.list_size(c)).copy()
                         for c in range(inv.nlist) if inv.list_size(c)]
                return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
            if self._labels is None:
                return faiss.vector_to_array(self._index.id_map).astype(np.int64)
            return np.fromiter(self._pos.keys(), dtype=np.int64, count=len(self._pos))

    def __contains__(self, photo_id: int) -> bool:
        with self._lock:
            if self._labels is None:
                return bool(np.any(self.ids() == int(photo_id)))
            return int(photo_id) in self._pos

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
        with self._lock:
            if self._labels is None:
                if self.index_type == "ivfsq8" and not self._index.is_trained:
                    self.train(vecs)
                if self._index.ntotal:
                    self._index.remove_ids(_faiss().IDSelectorBatch(ids))
                self._index.add_with_ids(vecs, ids)
            else:
                self._remove_hnsw(ids)
                start = self._index.ntotal
                self._index.add(vecs)
                self._labels = np.concatenate([self._labels, ids])
                for j, i in enumerate(ids.tolist()):
                    self._pos[i] = start + j

    def train(self, sample) -> None:
        """Fit the IVF cells (k-means) and the 8-bit quantiser on a sample of vectors ("ivfsq8" only).
        With fewer sample vectors than cells, the cell count shrinks to fit."""
        if self.index_type != "ivfsq8":
            return
        faiss = _faiss()
        x = _as_vecs(sample, self.dim)
        if len(x) == 0:
            raise ValueError("cannot train an IVF index on no vectors")
        with self._lock:
            if self._index.ntotal:
                raise RuntimeError("the IVF index already holds vectors; build a new one to retrain")
            nlist = max(1, min(self.nlist, len(x) // 4 or 1))
            if nlist != self.nlist:
                self.nlist = nlist
                self._index = self._new_ivf()
            self._index.cp.niter = 10
            self._index.cp.max_points_per_centroid = IVF_TRAIN_PER_LIST
            self._index.train(x)

    def remove(self, ids) -> int:
        """Remove photo ids (missing ones are ignored); returns how many were removed."""
        ids = _as_ids(ids)
        if len(ids) == 0:
            return 0
        with self._lock:
            if self._labels is None:
                if not self._index.ntotal:
                    return 0
                return int(self._index.remove_ids(_faiss().IDSelectorBatch(ids)))
            n = self._remove_hnsw(ids)
            self._maybe_compact()
            return n

    def _remove_hnsw(self, ids: np.ndarray) -> int:
        n = 0
        for i in ids.tolist():
            p = self._pos.pop(i, None)
            if p is not None:
                self._labels[p] = -1
                n += 1
        return n

    def _maybe_compact(self, force: bool = False) -> None:
        if self._labels is None:
            return
        dead = len(self._labels) - len(self._pos)
        if dead and (force or dead > 0.25 * len(self._labels)):
            live = np.flatnonzero(self._labels >= 0)
            vecs = self._index.reconstruct_batch(live) if len(live) else np.empty((0, self.dim), np.float32)
            ids = self._labels[live]
            self._index = self._new_hnsw()
            self._labels = np.empty(0, dtype=np.int64)
            self._pos = {}
            if len(ids):
                self.add(ids, vecs)

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
        with self._lock, _omp_threads(1 if len(q) <= 4 else None):
            allowed = None if allowed_ids is None else np.unique(_as_ids(list(allowed_ids)
                                                                       if not isinstance(allowed_ids, np.ndarray)
                                                                       else allowed_ids))
            n = len(self)
            if k <= 0 or n == 0 or (allowed is not None and len(allowed) == 0):
                I = np.full((len(q), max(k, 0)), -1, dtype=np.int64)
                D = np.full((len(q), max(k, 0)), -np.inf, dtype=np.float32)
            elif self.index_type == "ivfsq8":
                I, D = self._search_ivf(q, k, allowed)
            elif allowed is not None and len(allowed) <= _BRUTE_FORCE_MAX:
                I, D = self._search_exact(q, k, allowed)
            elif self._labels is None:
                I, D = self._search_flat(q, k, allowed)
            else:
                I, D = self._search_hnsw(q, k, allowed)
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
            nprobe = self.nlist if len(allowed) <= _BRUTE_FORCE_MAX else min(self.nlist, int(self.nprobe / frac) + 1)
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=faiss.IDSelectorBatch(allowed))
        D, I = self._index.search(q, kk, params=params)
        return self._pad(I, D, k)

    def _search_hnsw(self, q, k, allowed):
        faiss = _faiss()
        ntotal = int(self._index.ntotal)
        kk = min(k, len(self._pos))
        if allowed is None:
            if len(self._pos) == ntotal:
                params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, kk))
                D, I = self._index.search(q, kk, params=params)
            else:
                bits = np.packbits(self._labels >= 0, bitorder="little")
                sel = faiss.IDSelectorBitmap(ntotal, faiss.swig_ptr(bits))
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, kk))
                D, I = self._index.search(q, kk, params=params)
                del bits
        else:
            internal = np.asarray([self._pos[i] for i in allowed.tolist() if i in self._pos], dtype=np.int64)
            sel = faiss.IDSelectorBatch(internal)
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, kk))
            D, I = self._index.search(q, kk, params=params)
        ext = np.where(I >= 0, self._labels[np.maximum(I, 0)], -1)
        return self._pad(ext, D, k)

    def _search_exact(self, q, k, allowed):
        """Exact scores over a small allowed set by reconstructing its vectors."""
        if self._labels is None:
            present = allowed[np.isin(allowed, self.ids())]
            vecs = (np.stack([self._index.reconstruct(int(i)) for i in present.tolist()])
                    if len(present) else np.empty((0, self.dim), np.float32))
        else:
            present = np.asarray([i for i in allowed.tolist() if i in self._pos], dtype=np.int64)
            internal = np.asarray([self._pos[i] for i in present.tolist()], dtype=np.int64)
            vecs = self._index.reconstruct_batch(internal) if len(internal) else np.empty((0, self.dim), np.float32)
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
        faiss = _faiss()
        path = Path(path) if path is not None else self.path
        if path is None:
            raise ValueError("no path to save the vector index to")
        if revision is not None:
            self.revision = revision
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._maybe_compact()
            # The header is padded to a fixed size so it can be rewritten in place once the FAISS
            # byte count is known (the index is streamed, not copied into memory first).
            hlen = len(self._header(0)) + 32
            with atomic_open(path) as f:
                f.write(MAGIC + struct.pack("<I", hlen) + self._header(0).ljust(hlen))
                if self._labels is not None:
                    np.save(f, self._labels, allow_pickle=False)
                start = f.tell()
                writer = faiss.PyCallbackIOWriter(f.write)
                faiss.write_index(self._index, writer)
                del writer
                nbytes = f.tell() - start
                f.seek(len(MAGIC) + 4)
                f.write(self._header(nbytes).ljust(hlen))
            _fsync_dir(path.parent)
        self.path = path
        return path

    def _header(self, faiss_bytes: int) -> bytes:
        h = {"format": FORMAT, "revision": self.revision, "count": len(self), "dim": self.dim,
             "index_type": self.index_type, "ntotal": int(self._index.ntotal),
             "labels": self._labels is not None, "faiss_bytes": int(faiss_bytes), "hnsw_m": self.hnsw_m,
             "nlist": self.nlist, "nprobe": self.nprobe, "trained_on": self.trained_on}
        return json.dumps(h, sort_keys=True).encode()

    @staticmethod
    def read_header(path: str | os.PathLike) -> dict:
        """The header of a saved index (raises ValueError/OSError if it is not one)."""
        with open(path, "rb") as f:
            return _read_header(f, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, **kw) -> "VectorIndex":
        """Read a saved index; raises (OSError, ValueError, RuntimeError) if missing or damaged."""
        faiss = _faiss()
        path = Path(path)
        size = path.stat().st_size
        with open(path, "rb") as f:
            h = _read_header(f, path)
            kw.setdefault("nprobe", h.get("nprobe", IVF_NPROBE))
            self = cls(dim=h["dim"], index_type=h["index_type"], revision=h["revision"], path=path,
                       hnsw_m=h.get("hnsw_m", 32), nlist=h.get("nlist", 1024), **kw)
            self.trained_on = int(h.get("trained_on", 0))
            if h["labels"]:
                labels = np.load(f, allow_pickle=False)
                if labels.dtype != np.int64 or labels.ndim != 1 or len(labels) != h["ntotal"]:
                    raise ValueError(f"{path}: bad label table")
            start = f.tell()
            if start + h["faiss_bytes"] != size:
                raise ValueError(f"{path}: truncated or padded ({size} bytes, expected {start + h['faiss_bytes']})")
            reader = faiss.PyCallbackIOReader(f.read)
            index = faiss.read_index(reader)
            del reader
        if index.d != self.dim or index.ntotal != h["ntotal"]:
            raise ValueError(f"{path}: index has d={index.d} ntotal={index.ntotal}, header says {h}")
        if h["labels"]:
            index.hnsw.efSearch = self.ef_search
            self._index = index
            self._labels = labels
            live = np.flatnonzero(labels >= 0)
            self._pos = dict(zip(labels[live].tolist(), live.tolist()))
        elif h["index_type"] == "ivfsq8":
            if not isinstance(index, faiss.IndexIVFScalarQuantizer) or index.nlist != self.nlist:
                raise ValueError(f"{path}: not an IVF-SQ8 index with {self.nlist} cells")
            self._index = index
        else:
            if not isinstance(index, faiss.IndexIDMap2):
                raise ValueError(f"{path}: not an IndexIDMap2")
            self._index = index
        if len(self) != h["count"]:
            raise ValueError(f"{path}: {len(self)} vectors, header says {h['count']}")
        return self

    @classmethod
    def build(cls, batches: Iterable[tuple[Any, Any]], dim: int = 384, index_type: str = "flat",
              revision: Any = None, count: int | None = None, sample: Callable[[int], Any] | None = None,
              **kw) -> "VectorIndex":
        """A new index from (ids, vectors) batches.

        "ivfsq8": ``count`` (the expected number of vectors) sizes the cells; ``sample(n)`` returns
        about n vectors spread over the whole collection to train them on (default: the first
        vectors of ``batches``)."""
        if index_type == "ivfsq8" and "nlist" not in kw:
            kw["nlist"] = ivf_nlist(count or 0)
        self = cls(dim=dim, index_type=index_type, revision=revision, **kw)
        it = iter(_iter_batches(batches))
        if index_type == "ivfsq8":
            need = self.nlist * IVF_TRAIN_PER_LIST
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
             dim: int = 384, index_type: str | None = "flat", count: int | Callable[[], int] | None = None,
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
                return cls.load(path, **{k: v for k, v in kw.items() if k in ("ef_construction", "ef_search", "nprobe")})
            log.info("vector index %s is stale (revision %r, store %r): rebuilding", path, h.get("revision"), revision)
        except FileNotFoundError:
            log.info("vector index %s missing: building", path)
        except Exception as e:  # unreadable/damaged: rebuild
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


def _read_header(f, path: Path) -> dict:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise ValueError(f"{path}: not an imgsearch vector index")
    (n,) = struct.unpack("<I", f.read(4))
    if n > 1 << 20:
        raise ValueError(f"{path}: bad header length {n}")
    raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{path}: truncated header")
    h = json.loads(raw.decode())
    if h.get("format") != FORMAT:
        raise ValueError(f"{path}: format {h.get('format')!r}, this imgsearch reads {FORMAT}")
    if h.get("index_type") not in INDEX_TYPES:
        raise ValueError(f"{path}: unknown index type {h.get('index_type')!r}")
    return h


@contextlib.contextmanager
def _omp_threads(n: int | None):
    """Run FAISS with ``n`` OpenMP threads inside the block (None: unchanged). A single query gains
    nothing from threads, and OpenMP's hand-off costs milliseconds on a busy 2-core machine:
    flat k=40 search over 3,000 vectors 8.0 ms with 2 threads vs 0.09 ms with 1; 100,000 vectors
    31.5 vs 8.1 ms (measured while two training jobs held both cores). The setting is per thread."""
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


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
