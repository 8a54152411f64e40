"""The public API: one photo library (one SQLite file + its FAISS caches, in one folder).

    from imgsearch import Library
    with Library() as lib:                         # $IMGSEARCH_DB or ~/.local/share/imgsearch/library.db
        report = lib.index(["~/Pictures"])         # incremental: only new/changed photos are captioned
        for hit in lib.query("dog on a beach", k=5):
            print(hit.rank, hit.score, hit.path, hit.caption)

Heavy things are loaded lazily: the captioner (torch) only when an index run has photos to
caption, the text embedder (NumPy MiniLM) on the first dense/hybrid query or caption
embedding. ``import imgsearch`` and a query never import torch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from imgsearch import paths as _paths
from imgsearch.hits import Hit
from imgsearch.indexer.pipeline import IndexReport
from imgsearch.paths import resolve_root
from imgsearch.store.queries import under_clause

# Fusion of the ranked lists of a hybrid query. "bm25": FTS/BM25 over captions + keywords +
# tags; "caption": cosine of the query's MiniLM embedding with each photo's caption vector (3-best
# captions + tags, text/caption_vectors.py); "image": cosine with the photo embedding (checkpoints
# with a projection head). Chosen by Recall@K on Flickr8k dev with bench/tune_fusion.py; change here only.
FUSION: dict[str, Any] = {
    # bench/tune_fusion.py on Flickr8k dev (1,000 photos, 5,000 caption queries, each signal's top 40 as
    # Library.query(k=10) fuses them), best R@1+R@5+R@10 of 480 settings: z-score sum, weights
    # 1.0/0.25/3.0 → 0.222 / 0.512 / 0.647 (median rank 5); image alone 0.214 / 0.496 / 0.631;
    # the best RRF (k=5, 1.0/0.25/3.0) 0.212 / 0.508 / 0.648. With the SWA photo projection: 0.226 / 0.519 / 0.653
    # (image alone 0.219 / 0.501 / 0.641; 1.0/0.25/4.0 would give 0.231 / 0.519 / 0.652 — kept 3.0, the re-ranking
    # was tuned on it)
    "method": "zsum",                # "rrf" | "sum" | "zsum" (see imgsearch.search.fuse)
    "k_rrf": 60,                     # (rrf only)
    "weights": {"bm25": 1.0, "caption": 0.25, "image": 3.0},
    "like_weights": {"caption": 1.0, "image": 1.0},    # query(like=photo): photo↔photo and caption↔caption
    "overfetch": 4,                  # candidates per list = max(k * overfetch, k + 20)
}

# Re-ranking of a hybrid query's fused top `depth` by the captioning decoder's log-likelihood of the
# query (imgsearch/model/rerank.py): score = z(fused) + weight * z(log P(query | photo)), z over those
# `depth` photos. Chosen on Flickr8k dev with bench/tune_fusion.py --rerank: the best R@1+R@5+R@10 at depth 30
# (deeper costs proportionally more time for < 0.005): 0.262 / 0.578 / 0.702 (weight 2.0: 0.265 / 0.577 / 0.698).
RERANK: dict[str, Any] = {
    "depth": 30,
    "weight": 1.5,
}

BM25_CACHE_MIN = 50_000   # photos from which BM25 is answered from precomputed scores (FTS5 below)

# hybrid: all signals fused; bm25: words only; dense: query ↔ caption embeddings; image: query ↔ photo embeddings
MODES = ("hybrid", "bm25", "dense", "image")
EMBED_DIM = 384


def _candidates(k: int) -> int:
    """How many photos each signal returns first for a query of ``k`` results (FUSION["overfetch"])."""
    return max(k * FUSION["overfetch"], k + 20)


def fuse_lists(lists: dict[str, list[tuple[int, float]]], weights: dict[str, float]) -> list[tuple[int, float]]:
    """One ranked list: a single signal keeps its own scores (BM25, or cosine); several are fused per FUSION."""
    from imgsearch.search.fuse import fuse

    if not lists:
        return []
    if len(lists) == 1:
        return next(iter(lists.values()))
    return fuse(lists, {name: weights.get(name, 1.0) for name in lists}, method=FUSION["method"],
                k_rrf=FUSION["k_rrf"])


from imgsearch.errors import LibraryError  # noqa: E402  (the first release's name: imgsearch.errors.ImgsearchError)


ProgressArg = bool | Callable[[int, int], None] | None


class Library:
    """A photo library. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike | None = None, device: str = "auto", captioner=None, *,
                 model: str | os.PathLike | None = None, create: bool = True):
        from imgsearch.store.db import StoreError, open_store

        self.path = _paths.resolve_db_path(path)
        try:
            self.store = open_store(self.path, create=create)
        except StoreError as e:
            raise LibraryError(str(e)) from None
        self.device = device
        self.model = model
        self._captioner = captioner
        self._embedder = None
        self._vectors: dict[str, Any] = {}
        self._bm25: tuple[int, Any] | None = None   # (store revision, BM25Cache or None)
        self._pool = None                            # query worker thread (_background), made on first use
        self._scorer = None                          # re-ranking QueryScorer; False: none for this library
        self._lock = threading.RLock()
        try:
            self._sync_search_text()
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
            self._pool = None
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
            self.store = None
        self._vectors.clear()

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r})"

    def _sync_search_text(self) -> None:
        """(Re)build the BM25 documents when the text normalisation they were made with changed
        (or the table is new: libraries migrated from before BM25 lived in SQLite)."""
        from imgsearch.indexer.pipeline import rebuild_search_text
        from imgsearch.store.db import get_meta, set_meta
        from imgsearch.text.normalize import NORMALIZER_VERSION

        store = self._store()
        with store.session() as s:
            if get_meta(s, "fts_normalizer") == NORMALIZER_VERSION:
                return
        try:
            with store.write() as s:
                if get_meta(s, "fts_normalizer") != NORMALIZER_VERSION:  # another process may have done it
                    rebuild_search_text(s)
                    set_meta(s, "fts_normalizer", NORMALIZER_VERSION)
        except Exception as e:  # e.g. a read-only library: search still works, with the old terms
            import logging

            logging.getLogger(__name__).warning("could not rebuild the BM25 index of %s: %s", self.path, e)

    def _store(self):
        if self.store is None:
            raise LibraryError("the library is closed")
        return self.store

    # ------------------------------------------------------------------ lazy models
    def captioner(self, device: str | None = None):
        """The captioner (loaded on first use; ``device`` reloads a library-owned one elsewhere)."""
        with self._lock:
            want = device or self.device
            cap = self._captioner
            if cap is not None and device is not None and getattr(self, "_owns_captioner", False):
                if _device_type(want) != getattr(cap.device, "type", None):
                    cap = None
            if cap is None:
                from imgsearch.model.captioner import Captioner, CheckpointError

                try:
                    cap = Captioner.load(self.model, device=want)
                except (CheckpointError, ValueError) as e:
                    raise LibraryError(str(e)) from None
                self._captioner = cap
                self._owns_captioner = True
            return cap

    def _captioner_version(self) -> str:
        """The version a re-index would write, without loading the model (or torch)."""
        if self._captioner is not None:
            return self._captioner.version
        from imgsearch.model.versions import checkpoint_version, shipped_checkpoint

        path = Path(self.model) if self.model is not None else shipped_checkpoint()
        if not path.is_file():
            raise LibraryError(f"checkpoint not found: {path}")
        return checkpoint_version(path)

    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from imgsearch.text.embed import TextEmbedder

                try:
                    self._embedder = TextEmbedder.load()
                except Exception as e:  # missing package / corrupt weights: say which
                    raise LibraryError(f"cannot load the text embedder: {e}") from None
            return self._embedder

    # ------------------------------------------------------------------ indexing
    def index(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *, batch_size: int = 32,
              workers: int | None = None, beam: int = 3, progress: ProgressArg = True,
              device: str | None = None, retry_failed: bool = False, prune_empty: bool = False) -> IndexReport:
        """Index (incrementally) every photo under ``paths`` (folders or files).

        New and changed files are captioned; moved files (same content, old path gone) keep
        their captions; files gone from under ``paths`` are removed; photos captioned by
        another model version are re-captioned. Files that failed before are retried only
        when they change (size or mtime), or with ``retry_failed=True``. A folder that had
        photos but now has none (an unmounted drive?) keeps them unless ``prune_empty=True``.
        """
        from imgsearch.indexer.pipeline import IndexRunner
        from imgsearch.indexer.scan import RootNotFoundError

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        roots = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]
        if not roots:
            raise LibraryError("nothing to index: give at least one folder")
        for r in roots:
            if not os.path.exists(r):
                raise LibraryError(f"no such folder or file: {r}")
        if batch_size < 1:
            raise LibraryError("batch size must be at least 1")
        if device is not None and device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
            raise LibraryError(f"device must be auto, cpu or cuda, not {device!r}")
        store = self._store()
        with _index_lock(self.path), _progress_reporter(progress) as report_progress:
            rev0 = store.revision()
            runner = IndexRunner(
                store, roots,
                get_captioner=lambda: self.captioner(device),
                get_version=self._captioner_version,
                get_embedder=self.embedder,
                batch_size=batch_size, workers=workers, beam=beam,
                progress=report_progress, retry_failed=retry_failed, prune_empty=prune_empty,
            )
            try:
                report = runner.run()
            except RootNotFoundError as e:
                raise LibraryError(f"no such folder or file: {e.filename}") from None
            for kind in ("caption", "image"):
                self._update_vectors(kind, rev0, runner.touched)
            self._update_bm25_cache()
        if self._captioner is not None:
            # the captioner (and torch) is loaded now: export the query scorer so that queries need neither
            with self._lock:
                self._scorer = None
            try:
                self._query_scorer()
            except Exception as e:  # never fail an index run over it: queries fall back to the fused order
                logging.getLogger(__name__).warning("query re-ranking unavailable: %s: %s", type(e).__name__, e)
        return report

    # ------------------------------------------------------------------ caches
    def refresh_caches(self) -> None:
        """Bring the FAISS files and the BM25 cache up to the database revision (rebuilt from SQLite when stale)."""
        for kind in ("caption", "image"):
            self._vector_index(kind)
        self._update_bm25_cache()

    def _faiss_path(self, kind: str) -> Path:
        return _paths.captions_faiss_path(self.path) if kind == "caption" else _paths.images_faiss_path(self.path)

    def _vector_index(self, kind: str):
        """The FAISS index for ``kind`` at the current revision (loaded, or rebuilt from SQLite and saved)."""
        with self._lock:
            rev = self._store().revision()
            cached = self._vectors.get(kind)
            if cached is not None and cached[0] == rev:
                return cached[1]
            vi = self._open_vectors(kind, rev)
            self._vectors[kind] = (rev, vi)
            return vi

    def _open_vectors(self, kind: str, rev: int, index_type: str | None = None):
        """The FAISS file of ``kind`` if it is at ``rev`` (and of ``index_type``, when given), else rebuilt from
        SQLite — flat, or IVF-SQ8 for large libraries (dense.choose_index_type) — and saved."""
        from imgsearch.search.dense import VectorIndex

        counted: list[int] = []

        def count() -> int:   # counting a million rows costs ~1 s: only when a rebuild needs it, once
            if not counted:
                counted.append(self._count_vectors(kind))
            return counted[0]

        return VectorIndex.open(self._faiss_path(kind), rev, lambda: self._iter_vectors(kind), dim=EMBED_DIM,
                                index_type=index_type, count=count,
                                sample=lambda m: self._sample_vectors(kind, m, count()))

    def _update_vectors(self, kind: str, rev0: int, touched: set[int]) -> None:
        """After an index run: apply its changes to the FAISS file if it was current at ``rev0``
        (cheap), else rebuild it from SQLite. Saved atomically with the new revision. An index that
        grew past (or shrank below) what its type suits is rebuilt as the right type."""
        from imgsearch.search.dense import VectorIndex, choose_index_type

        with self._lock:
            self._vectors.pop(kind, None)
            rev = self._store().revision()
            path = self._faiss_path(kind)
            try:
                file_rev = VectorIndex.read_header(path).get("revision")
            except Exception:  # missing / damaged
                file_rev = None
            vi = None
            if file_rev == rev0 != rev and len(touched) < 50_000:
                try:
                    vi = VectorIndex.load(path)
                except Exception:
                    vi = None
            if vi is None or vi.dim != EMBED_DIM:
                self._vector_index(kind)  # current already, or rebuilt from SQLite
                return
            ids = sorted(touched)
            vi.remove(ids)
            for b_ids, b_vecs in self._iter_vectors(kind, ids):
                vi.add(b_ids, b_vecs)
            outgrown = vi.index_type == "ivfsq8" and len(vi) > 4 * max(vi.trained_on, 1)
            want = choose_index_type(len(vi), None if outgrown else vi.index_type)
            if want != vi.index_type or outgrown:   # the file is still at rev0: open() rebuilds it
                vi = self._open_vectors(kind, rev, want)
            else:
                try:
                    vi.save(path, revision=rev)
                except OSError:  # read-only folder: the in-memory index is still right
                    vi.revision = rev
            self._vectors[kind] = (rev, vi)

    def _count_vectors(self, kind: str) -> int:
        from sqlalchemy import text

        column = "caption_embedding" if kind == "caption" else "image_embedding"
        with self._store().engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM photos WHERE {column} IS NOT NULL "
                                         "AND error IS NULL")).scalar_one())

    def _sample_vectors(self, kind: str, m: int, n: int) -> np.ndarray:
        """About ``m`` of the ``n`` stored embeddings, spread over the whole library (every k-th id)."""
        from sqlalchemy import text

        column = "caption_embedding" if kind == "caption" else "image_embedding"
        step = max(1, n // max(m, 1))
        with self._store().engine.connect() as conn:
            rows = conn.execute(text(f"SELECT {column} FROM photos WHERE {column} IS NOT NULL AND error IS NULL "
                                     "AND id % :step = 0 LIMIT :m"), {"step": step, "m": m}).scalars().all()
        vecs = [np.frombuffer(b, dtype="<f4") for b in rows]
        vecs = [v for v in vecs if v.shape[0] == EMBED_DIM]
        return np.stack(vecs) if vecs else np.empty((0, EMBED_DIM), np.float32)

    def _iter_vectors(self, kind: str, only: Sequence[int] | None = None, chunk: int = 8192):
        """(ids, vectors) batches of good photos' embeddings, straight from SQLite."""
        from sqlalchemy import bindparam, text

        column = "caption_embedding" if kind == "caption" else "image_embedding"
        base = f"SELECT id, {column} FROM photos WHERE {column} IS NOT NULL AND error IS NULL"
        with self._store().engine.connect() as conn:
            if only is None:
                results = [conn.execute(text(base + " ORDER BY id"))]
            else:
                stmt = text(base + " AND id IN :ids").bindparams(bindparam("ids", expanding=True))
                results = (conn.execute(stmt, {"ids": list(only[i:i + 900])}) for i in range(0, len(only), 900))
            ids: list[int] = []
            vecs: list[np.ndarray] = []
            for res in results:
                for pid, blob in res:
                    v = np.frombuffer(blob, dtype="<f4")
                    if v.shape[0] != EMBED_DIM:
                        continue
                    ids.append(pid)
                    vecs.append(v)
                    if len(ids) >= chunk:
                        yield np.asarray(ids, dtype=np.int64), np.stack(vecs)
                        ids, vecs = [], []
            if ids:
                yield np.asarray(ids, dtype=np.int64), np.stack(vecs)

    # ------------------------------------------------------------------ query
    def query(self, text: str | None = None, k: int = 10, mode: str = "hybrid",
              in_folder: str | os.PathLike | None = None, like: str | os.PathLike | int | None = None,
              rerank: bool = True) -> list[Hit]:
        """The ``k`` best photos for free ``text`` — or, with ``like`` (a photo path, indexed or not, or a
        photo id), the photos most similar to that photo. Photos whose file is gone are skipped.

        In ``hybrid`` mode the fused top RERANK["depth"] are re-ranked by how likely the captioner is to
        write ``text`` for each photo (``rerank=False``: the fused order as it is)."""
        if like is not None:
            return self._query_like(like, k, in_folder)
        if mode not in MODES:
            raise LibraryError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        text = (text or "").strip()
        if not text:
            raise LibraryError("empty query")
        k = int(k)
        if k < 1:
            return []
        folder = None
        if in_folder is not None:
            folder = resolve_root(in_folder)
            if not os.path.isdir(folder):
                raise LibraryError(f"no such folder: {folder}")
        if not self._has_searchable():
            return []
        allowed = self._ids_under(folder) if folder is not None else None
        n0 = _candidates(k)
        early = None
        if mode == "hybrid":
            # BM25 needs no query vector: run it on the other core while MiniLM and FAISS run here
            # (at 1M photos: BM25 13 ms, MiniLM 6 ms, FAISS 2 × 4 ms; numpy, onnxruntime and FAISS
            # release the GIL).
            early = self._background().submit(self._bm25_search, text, n0, allowed)
        qvec = self.embedder().embed([text])[0] if mode != "bm25" else None

        def lists_for(n: int):
            nonlocal early
            pre = early.result() if early is not None and n == n0 else None
            early = None
            return self.ranked_lists(text, qvec, mode, n, allowed, bm25=pre)

        post = (lambda fused: self._rerank(text, fused)) if mode == "hybrid" and rerank else None
        try:
            return self._search(lists_for, k, FUSION["weights"], post=post)
        finally:
            if early is not None:
                early.result()

    def _background(self):
        """One worker thread per Library for the parts of a query that can overlap."""
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsearch-query")
            return self._pool

    def _search(self, lists_for, k: int, weights: dict[str, float], post=None) -> list[Hit]:
        """Fuse the ranked lists (then ``post``-process the fused list), over-fetching until ``k`` photos
        whose files still exist are found or every signal has returned all it has (a list shorter than
        asked for)."""
        n = _candidates(k)
        while True:
            lists = lists_for(n)
            fused = fuse_lists(lists, weights)
            hits = self._hits(post(fused) if post is not None else fused, k)
            if len(hits) >= k or all(len(lst) < n for lst in lists.values()):
                return hits
            n *= 4

    # ------------------------------------------------------------------ re-ranking
    def _rerank(self, text: str, fused: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The fused list with its top RERANK["depth"] re-ordered by log P(text | photo) (model/rerank.py).
        Unchanged when the library has no scorer or cells, or no word of ``text`` is in the vocabulary."""
        from imgsearch.model.rerank import rerank, unpack_cells

        depth = int(RERANK["depth"])
        if len(fused) < 2 or depth < 2:
            return fused
        scorer = self._query_scorer()
        tokens = scorer.tokens(text) if scorer is not None else None
        if tokens is None:
            return fused
        ids = [i for i, _ in fused[:depth]]
        blobs = self._cells(ids, scorer.version)
        if not blobs:
            return fused
        have = [i for i in ids if i in blobs]
        try:
            ll = scorer.score(tokens, unpack_cells([blobs[i] for i in have]))
        except Exception as e:  # damaged cells, a broken scorer: the query still answers, in the fused order
            logging.getLogger(__name__).warning("re-ranking skipped: %s: %s", type(e).__name__, e)
            return fused
        return rerank(fused, dict(zip(have, ll.tolist())), depth, float(RERANK["weight"]))

    def _cells(self, ids: Sequence[int], version: str) -> dict[int, bytes]:
        """Stored re-ranking cells of the photos ``ids`` that were described by checkpoint ``version``."""
        from sqlalchemy import select

        from imgsearch.store.models import Photo, PhotoCells

        with self._store().session() as s:
            return dict(s.execute(select(PhotoCells.photo_id, PhotoCells.data)
                                  .join(Photo, Photo.id == PhotoCells.photo_id)
                                  .where(PhotoCells.photo_id.in_(list(ids)), Photo.model_version == version)).all())

    def _query_scorer(self):
        """The QueryScorer for the library's checkpoint: the cached ONNX graph (no torch) when there is
        one; else, if any photo has cells of this version, made from the loaded captioner (once)."""
        with self._lock:
            if self._scorer is None:
                from imgsearch.model.rerank import QueryScorer

                try:
                    version = self._captioner_version()
                except LibraryError:
                    self._scorer = False
                    return None
                scorer = QueryScorer.load(version)
                if scorer is None and (self._captioner is not None or self._has_cells(version)):
                    try:
                        scorer = QueryScorer.for_captioner(self.captioner())
                    except LibraryError as e:
                        logging.getLogger(__name__).warning("no re-ranking: %s", e)
                self._scorer = scorer if scorer is not None else False
            return self._scorer or None

    def _has_cells(self, version: str) -> bool:
        from sqlalchemy import text as sql

        with self._store().engine.connect() as conn:
            return conn.execute(sql(
                "SELECT 1 FROM photos p WHERE p.model_version = :v AND p.error IS NULL "
                "AND EXISTS (SELECT 1 FROM photo_cells c WHERE c.photo_id = p.id) LIMIT 1"), {"v": version}).first() is not None

    def _has_searchable(self) -> bool:
        """Whether any photo can be returned (cheap: no count over a million rows)."""
        from sqlalchemy import text as sql

        with self._store().engine.connect() as conn:
            return conn.execute(sql("SELECT 1 FROM photos WHERE error IS NULL LIMIT 1")).first() is not None

    def ranked_lists(self, text: str, qvec, mode: str, n: int, allowed: set[int] | None = None,
                     bm25: list[tuple[int, float]] | None = None) -> dict[str, list[tuple[int, float]]]:
        """The per-signal ranked lists (id, score) of a query, before fusion (``bm25``: that list, if
        already computed for this ``n``)."""
        lists: dict[str, list[tuple[int, float]]] = {}
        if mode in ("bm25", "hybrid"):
            lists["bm25"] = bm25 if bm25 is not None else self._bm25_search(text, n, allowed)
        if mode in ("dense", "hybrid"):
            lists["caption"] = self._dense_search("caption", qvec, n, allowed)
        if mode in ("image", "hybrid"):
            lists["image"] = self._dense_search("image", qvec, n, allowed)
        return {name: lst for name, lst in lists.items() if lst}

    def _query_like(self, like, k: int, in_folder) -> list[Hit]:
        folder = resolve_root(in_folder) if in_folder is not None else None
        if folder is not None and not os.path.isdir(folder):
            raise LibraryError(f"no such folder: {folder}")
        cap_vec, img_vec = self._photo_vectors(like)
        allowed = self._ids_under(folder) if folder is not None else None

        def lists_for(n: int):
            lists = {"caption": self._dense_search("caption", cap_vec, n, allowed)}
            if img_vec is not None:
                lists["image"] = self._dense_search("image", img_vec, n, allowed)
            return {name: lst for name, lst in lists.items() if lst}

        return self._search(lists_for, int(k), FUSION["like_weights"])

    def _photo_vectors(self, like) -> tuple[np.ndarray, np.ndarray | None]:
        """(caption embedding, photo embedding) of an indexed photo (by id or path), else computed now."""
        from sqlalchemy import select

        from imgsearch.store.models import Photo

        with self._store().session() as s:
            q = select(Photo.caption_embedding, Photo.image_embedding).where(Photo.error.is_(None))
            if isinstance(like, int):
                q = q.where(Photo.id == like)
            else:
                q = q.where(Photo.path == os.path.abspath(os.fspath(like)))
            row = s.execute(q).first()
        if row is not None and row.caption_embedding is not None:
            img = np.frombuffer(row.image_embedding, dtype="<f4") if row.image_embedding is not None else None
            return np.frombuffer(row.caption_embedding, dtype="<f4"), img
        if isinstance(like, int):
            raise LibraryError(f"no indexed photo with id {like}")
        path = os.path.abspath(os.fspath(like))
        if not os.path.isfile(path):
            raise LibraryError(f"no such photo: {path}")
        from imgsearch.indexer.decode import DecodeError, open_photo, to_model_input

        cap = self.captioner()
        try:
            image = to_model_input(open_photo(path, target=cap.image_size), cap.image_size, cap.resize)
        except DecodeError as e:
            raise LibraryError(f"cannot read {path}: {e}") from None
        from imgsearch.text.caption_vectors import N_BEST, caption_vectors

        d = cap.describe(image[None], beam=3, n_best=N_BEST)[0]
        vec = caption_vectors(self.embedder(), [[c for c, _ in d.captions]], [[t for t, _ in d.tags]])[0]
        return vec, d.image_embedding

    def _dense_search(self, kind: str, qvec, n: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        vi = self._vector_index(kind)
        if len(vi) == 0:
            return []
        ids, scores = vi.search(np.asarray(qvec, dtype=np.float32), n,
                                allowed_ids=None if allowed is None else np.fromiter(allowed, dtype=np.int64))
        return [(int(i), float(sc)) for i, sc in zip(ids, scores) if int(i) >= 0]

    def _bm25_search(self, text: str, n: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        from imgsearch.search import bm25

        cache = self._bm25_cache()
        if cache is not None:
            return cache.search(text, n, ids_filter=allowed)
        with self._store().engine.connect() as conn:
            return bm25.search(conn, text, n, ids_filter=allowed)

    def _bm25_cache(self):
        """The precomputed BM25 scores (search/bm25.BM25Cache) when the file is at the store's revision,
        else None (FTS5 answers). Built after index runs on libraries of BM25_CACHE_MIN photos or more."""
        from imgsearch.search.bm25 import BM25Cache

        with self._lock:
            rev = self._store().revision()
            held = self._bm25
            if held is not None and held[0] == rev:
                return held[1]
            path = _paths.bm25_cache_path(self.path)
            cache = BM25Cache.open(path, rev) if path.exists() else None
            self._bm25 = (rev, cache)
            return cache

    def _update_bm25_cache(self) -> None:
        """Rebuild (or remove) the BM25 score cache so that it matches the store's current revision."""
        from imgsearch.search import bm25

        path = _paths.bm25_cache_path(self.path)
        Path(f"{self.path}.bm25.npz").unlink(missing_ok=True)   # the format before memory-mapping
        with self._lock:
            self._bm25 = None
            rev = self._store().revision()
            with self._store().engine.connect() as conn:
                n = bm25.count(conn)
                if n < BM25_CACHE_MIN:
                    path.unlink(missing_ok=True)
                    return
                try:
                    if bm25.BM25Cache.read_revision(path) == rev:
                        return
                except (OSError, ValueError):
                    pass
                cache = bm25.BM25Cache.build(conn, revision=rev)
            try:
                cache.save(path)
            except OSError as e:
                logging.getLogger(__name__).warning("could not save the BM25 cache %s: %s", path, e)
                return
            self._bm25 = (rev, cache)

    def _ids_under(self, folder: str) -> set[int]:
        from sqlalchemy import select

        from imgsearch.store.models import Photo

        with self._store().session() as s:
            return set(s.execute(select(Photo.id).where(under_clause(Photo.path, folder),
                                                        Photo.error.is_(None))).scalars())

    def _hits(self, ranked: Sequence[tuple[int, float]], k: int) -> list[Hit]:
        """Rows for the ranked ids, best first, skipping photos whose file is gone."""
        from sqlalchemy import literal_column, select

        from imgsearch.store.models import Photo, Tag

        hits: list[Hit] = []
        pos = 0
        with self._store().session() as s:
            while len(hits) < k and pos < len(ranked):
                chunk = ranked[pos:pos + max(k * 2, 16)]
                pos += len(chunk)
                ids = [i for i, _ in chunk]
                rows = {r.id: r for r in s.execute(
                    select(Photo.id, Photo.path, Photo.caption).where(Photo.id.in_(ids), Photo.error.is_(None)))}
                keep = [(i, sc) for i, sc in chunk if i in rows and os.path.exists(rows[i].path)]
                keep = keep[: k - len(hits)]
                terms: dict[int, dict[str, list[str]]] = {i: {"tag": [], "keyword": []} for i, _ in keep}
                if keep:
                    for pid, kind, term in s.execute(
                        select(Tag.photo_id, Tag.kind, Tag.term)
                        .where(Tag.photo_id.in_([i for i, _ in keep]))
                        .order_by(Tag.photo_id, Tag.kind, Tag.score.desc(), literal_column("tags.rowid"))
                    ):
                        terms[pid][kind].append(term)
                for i, sc in keep:
                    r = rows[i]
                    hits.append(Hit(path=r.path, score=float(sc), caption=r.caption or "",
                                    keywords=terms[i]["keyword"], id=i, tags=terms[i]["tag"], rank=len(hits) + 1))
        return hits

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Counts, last index run, model versions, where the library is and its size on disk."""
        from sqlalchemy import func, select

        from imgsearch.store.db import current_revision
        from imgsearch.store.models import IndexRun, Photo

        store = self._store()
        with store.session() as s:
            photos = s.execute(select(func.count()).select_from(Photo).where(Photo.error.is_(None))).scalar_one()
            failed = s.execute(select(func.count()).select_from(Photo).where(Photo.error.is_not(None))).scalar_one()
            versions = dict(s.execute(
                select(Photo.model_version, func.count()).where(Photo.error.is_(None)).group_by(Photo.model_version)
            ).all())
            last = s.execute(select(IndexRun).order_by(IndexRun.id.desc()).limit(1)).scalar_one_or_none()
            last_done = s.execute(select(IndexRun).where(IndexRun.finished_at.is_not(None))
                                  .order_by(IndexRun.id.desc()).limit(1)).scalar_one_or_none()
        files = [p for p in _paths.library_files(self.path) if p.exists()]
        size = sum(p.stat().st_size for p in files)
        thumbs = _paths.thumbs_dir(self.path)
        if thumbs.is_dir():
            size += sum(f.stat().st_size for f in thumbs.rglob("*") if f.is_file())

        def run_dict(r):
            if r is None:
                return None
            return {
                "started_at": r.started_at.isoformat(timespec="seconds") + "Z",
                "finished_at": r.finished_at.isoformat(timespec="seconds") + "Z" if r.finished_at else None,
                "seconds": r.seconds, "model_version": r.model_version, "added": r.added, "updated": r.updated,
                "moved": r.moved, "removed": r.removed, "failed": r.failed,
                "skipped_unchanged": r.skipped_unchanged,
            }

        return {
            "db_path": str(self.path),
            "photos": int(photos),
            "failed": int(failed),
            "model_versions": {str(k): int(v) for k, v in versions.items()},
            "model_version": max(versions, key=versions.get) if versions else None,
            "last_index": run_dict(last_done),
            "last_run_interrupted": bool(last is not None and last.finished_at is None),
            "revision": store.revision(),
            "schema": current_revision(store.engine),
            "size_bytes": int(size),
            "reranking": self._reranking_status(versions),
        }

    def _reranking_status(self, versions: dict) -> dict:
        """Whether hybrid queries can re-rank: photos described by the library's checkpoint (only their stored
        cells are scored) and its query scorer in the cache (else the first query exports it, loading torch)."""
        from imgsearch.model.rerank import scorer_path
        from imgsearch.text.embed import default_cache_dir

        try:
            version = self._captioner_version()
        except LibraryError as e:
            return {"checkpoint": None, "photos": 0, "scorer_cached": False, "note": str(e)}
        return {"checkpoint": version, "photos": int(versions.get(version, 0)),
                "scorer_cached": scorer_path(version, default_cache_dir()).is_file()}

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) for every file that could not be indexed, by path."""
        from sqlalchemy import select

        from imgsearch.store.models import Photo

        with self._store().session() as s:
            return [(p, e) for p, e in s.execute(
                select(Photo.path, Photo.error).where(Photo.error.is_not(None)).order_by(Photo.path))]


# ---------------------------------------------------------------------- helpers

def _device_type(device: str | None) -> str:
    if device in (None, "auto"):
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # pragma: no cover
            return "cpu"
    return str(device).split(":")[0]


@contextlib.contextmanager
def _index_lock(db_path: Path):
    """One index run per library at a time (an advisory lock on ``<db>.lock``)."""
    lock = _paths.lock_path(db_path)
    try:
        f = open(lock, "a+")
    except OSError as e:
        raise LibraryError(f"cannot create the lock file {lock}: {e.strerror or e}") from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LibraryError(f"another `imgsearch index` is running on {db_path}; wait for it to finish") from None
        yield
    finally:
        f.close()


@contextlib.contextmanager
def _progress_reporter(progress: ProgressArg):
    """``True`` → a rich bar on stderr (only on a terminal); a callable → called with (done, total)."""
    if callable(progress):
        yield progress
        return
    if not progress or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} img/s" if speed else "– img/s", style="progress.data.speed")

    bar = Progress(TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "task" not in state:
            if total == 0:
                return
            bar.start()
            state["task"] = bar.add_task("index", total=total)
        bar.update(state["task"], completed=done, total=total)

    try:
        yield update
    finally:
        if "task" in state:
            bar.stop()
