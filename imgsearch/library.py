"""The public API: one photo library (one SQLite file + its caches, in one folder).

    from imgsearch import Library
    with Library() as lib:                         # $IMGSEARCH_DB or ~/.local/share/imgsearch/library.db
        report = lib.index(["~/Pictures"])         # incremental: only new/changed photos are captioned
        for hit in lib.query("dog on a beach", k=5):
            print(hit.rank, hit.score, hit.path, hit.caption)

``Library`` is a facade: it wires named parts and holds no SQL of its own —

    store     the SQLite file (store/): the source of truth
    models    the captioner, text embedder and re-ranking scorer (models.py), loaded on first use
    caches    the FAISS files and the BM25 score cache (search/caches.py), keyed by the store's revision
    engine    the query path (search/engine.py): signals → fusion → re-ranking → hits
    index()   an index run (indexer/runner.py) under the library's lock, then the caches brought up to date

``import imgsearch`` and a query never import torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from imgsearch import paths as _paths
from imgsearch.devices import parse_device
from imgsearch.errors import LibraryError, ReadOnlyError, UserError
from imgsearch.hits import Hit
from imgsearch.indexer.report import IndexReport
from imgsearch.models import Models
from imgsearch.search.caches import SearchCaches
from imgsearch.search.engine import QueryEngine, fuse_lists
from imgsearch.search.settings import FUSION, MODES, RERANK
from imgsearch.store import queries
from imgsearch.store.db import current_revision, open_store
from imgsearch.store.upgrade import sync_search_text

__all__ = ["Library", "Hit", "IndexReport", "LibraryError", "FUSION", "RERANK", "MODES", "fuse_lists"]

ProgressFn = Callable[[int, int], None]


class Library:
    """A photo library. Use as a context manager, or call :meth:`close`.

    ``model``: a captioner checkpoint (default: the shipped one); ``device``: auto | cpu | cuda[:N];
    ``captioner``: an already-loaded captioner; ``models``: a whole :class:`~imgsearch.models.Models`
    (then ``model``, ``device`` and ``captioner`` are not used); ``create=False``: a missing library is an
    error instead of a new one. ``read_only``: search only, never write (None: when the library's folder or
    file cannot be written, or ``$IMGSEARCH_READ_ONLY`` is set); its caches then go to the user cache folder."""

    def __init__(self, path: str | os.PathLike | None = None, device: str = "auto", captioner=None, *,
                 model: str | os.PathLike | None = None, create: bool = True, models: Models | None = None,
                 read_only: bool | None = None):
        self.path = _paths.resolve_db_path(path)
        self.models = models if models is not None else Models(model, parse_device(device), captioner=captioner)
        self.store = open_store(self.path, create=create, read_only=read_only)
        self.caches = SearchCaches(self.store, self.path)
        self.engine = QueryEngine(self.store, self.caches, self.models)
        try:
            sync_search_text(self.store)
        except BaseException:
            self.close()
            raise

    @property
    def device(self) -> str:
        return self.models.device

    @property
    def model(self) -> Path | None:
        return self.models.checkpoint

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        self.caches.clear()

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r})"

    def _open_store(self):
        if self.store is None:
            raise UserError("the library is closed")
        return self.store

    @property
    def read_only(self) -> bool:
        """Opened read-only: searching only (index, forget and prune raise ReadOnlyError)."""
        return bool(self.store is not None and self.store.read_only)

    def _writable_store(self):
        store = self._open_store()
        if store.read_only:
            raise ReadOnlyError(f"read-only library: searching only ({self.path})")
        return store

    # ------------------------------------------------------------------ models
    def captioner(self, device: str | None = None):
        """The captioner (loaded on first use; ``device`` reloads a library-owned one elsewhere)."""
        return self.models.captioner(device)

    def embedder(self):
        """The text embedder (MiniLM, no torch)."""
        return self.models.embedder()

    # ------------------------------------------------------------------ indexing
    def index(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *, batch_size: int = 32,
              workers: int | None = None, beam: int = 3, progress: ProgressFn | bool | None = None,
              device: str | None = None, retry_failed: bool = False, prune_empty: bool = False,
              verify: bool = False) -> IndexReport:
        """Index (incrementally) every photo under ``paths`` (folders or files).

        New and changed files are captioned; moved files (same content, old path gone) keep
        their captions; files gone from under ``paths`` are removed; photos captioned by
        another model version are re-captioned. Files that failed before are retried only
        when they change (size or mtime), when the model version changes, or with ``retry_failed=True``.
        A model that fails on every photo raises ModelError and records nothing against them. A folder that had
        photos but now has none (an unmounted drive?), at any depth, keeps them unless
        ``prune_empty=True`` (``report.kept``: (folder, photos)). ``verify=True``: files whose size and mtime
        did not change are re-hashed too, and those whose content did change are re-described.
        ``progress``: called with (done, total) as photos are processed (the CLI draws a bar with it).
        """
        from imgsearch.indexer.lock import index_lock          # the indexing parts: a query process never
        from imgsearch.indexer.runner import IndexRunner      # needs them
        from imgsearch.indexer.scan import RootNotFoundError

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        roots = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]
        if not roots:
            raise UserError("nothing to index: give at least one folder")
        for r in roots:
            if not os.path.exists(r):
                raise UserError(f"no such folder or file: {r}")
        if batch_size < 1:
            raise UserError("batch size must be at least 1")
        if device is not None:
            device = parse_device(device)
        store = self._writable_store()
        with index_lock(self.path):
            rev0 = store.cache_key()
            runner = IndexRunner(
                store, roots,
                get_captioner=lambda: self.models.captioner(device),
                get_version=self.models.version,
                get_embedder=self.models.embedder,
                batch_size=batch_size, workers=workers, beam=beam,
                progress=progress if callable(progress) else None, retry_failed=retry_failed,
                prune_empty=prune_empty, verify=verify,
            )
            try:
                report = runner.run()
            except RootNotFoundError as e:   # a root vanished between the check above and the scan
                raise UserError(f"no such folder or file: {e.filename}") from None
            self.caches.update(rev0, runner.touched)
        if self.models.captioner_loaded:
            # the captioner (and torch) is loaded now: export the query scorer so that queries need neither
            self.models.export_scorer(lambda version: queries.has_cells(store, version))
        return report

    def forget(self, paths: str | os.PathLike | Iterable[str | os.PathLike], dry_run: bool = False):
        """Take photos, or whole folders, out of the library, whether or not their files still exist: their
        captions, cells, search-cache entries and thumbnails go too, and so do failed-file records under the
        paths. ``dry_run``: only say what would go. Returns a :class:`~imgsearch.indexer.forget.RemovalReport`
        (``paths`` that hold no photo of the library are its ``unmatched``)."""
        from imgsearch.indexer import forget

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise UserError("nothing to forget: give at least one photo or folder")
        return self._remove(lambda store: forget.select_forget(store, paths), dry_run)

    def prune(self, path: str | os.PathLike | None = None, dry_run: bool = False):
        """Drop the photos (and failed-file records) whose files are gone: at or below ``path`` (which may
        itself be gone), or everywhere. Files that cannot be checked (an unreadable folder) stay (``unreachable``).
        ``dry_run``: only say what would go. Returns a :class:`~imgsearch.indexer.forget.RemovalReport`."""
        from imgsearch.indexer import forget

        return self._remove(lambda store: forget.select_prune(store, path), dry_run)

    def _remove(self, select, dry_run: bool):
        """Select rows with ``select(store)`` and (unless ``dry_run``) remove them under the index lock,
        patching the search caches and deleting the thumbnails no other photo shares."""
        from imgsearch.indexer import forget
        from imgsearch.indexer.lock import index_lock

        store = self._open_store()
        if dry_run:
            report = select(store)
            report.dry_run = True
            return report
        store = self._writable_store()
        with index_lock(self.path):
            rev0 = store.cache_key()
            report = select(store)
            forget.remove(store, report)
            if report.ids:
                self.caches.update(rev0, set(report.ids))
                report.thumbnails = forget.delete_thumbnails(store, _paths.thumbs_dir(self.path), report.hashes)
        return report

    def refresh_caches(self) -> None:
        """Bring the FAISS files and the BM25 cache up to the database revision (rebuilt from SQLite when stale)."""
        self._open_store()
        self.caches.refresh()

    # ------------------------------------------------------------------ query
    def query(self, text: str | None = None, k: int = 10, mode: str = "hybrid",
              in_folder: str | os.PathLike | None = None, like: str | os.PathLike | int | None = None,
              rerank: bool = True, min_score: float | None = None) -> list[Hit]:
        """The ``k`` best photos for free ``text`` — or, with ``like`` (a photo path, indexed or not, or a
        photo id), the photos most similar to that photo. ``in_folder``: only photos at or below it.
        Photos whose file is gone are skipped.

        In ``hybrid`` mode the fused top RERANK["depth"] are re-ranked by how likely the captioner is to
        write ``text`` for each photo (``rerank=False``: the fused order as it is). ``min_score``: photos whose
        relevance to ``text`` is lower are cut (None: the calibrated default; 0: none; search/relevance.py)."""
        self._open_store()
        if like is not None:
            return self.engine.like(like, k, folder=in_folder)
        return self.engine.search(text, k, mode, folder=in_folder, rerank=rerank, min_score=min_score)

    def ranked_lists(self, text: str, qvec, mode: str, n: int, allowed: set[int] | None = None,
                     bm25: list[tuple[int, float]] | None = None) -> dict[str, list[tuple[int, float]]]:
        """The per-signal ranked lists of a query before fusion (see QueryEngine.ranked_lists)."""
        return self.engine.ranked_lists(text, qvec, mode, n, allowed, bm25=bm25)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Counts, last index run, model versions, where the library is and its size on disk; the indexed
        roots (``roots``: path, photos, failed, reachable, state) and whether an index run holds the library's
        lock now (``index_running``; then the unfinished latest run is that one, not an interrupted one)."""
        from imgsearch.indexer.lock import index_running
        from imgsearch.roots import root_status

        store = self._open_store()
        photos, failed, versions = queries.photo_counts(store)
        last, last_done = queries.last_runs(store)
        running = index_running(self.path)
        unfinished = bool(last is not None and last["finished_at"] is None)
        return {
            "db_path": str(self.path),
            "photos": photos,
            "failed": failed,
            "model_versions": versions,
            "model_version": max(versions, key=versions.get) if versions else None,
            "last_index": last_done,
            "last_run_interrupted": unfinished and not running,
            "index_running": running,
            "running_since": last["started_at"] if unfinished and running else None,
            "roots": root_status(store),
            "revision": store.revision(),
            "schema": current_revision(store.engine),
            "size_bytes": _size_on_disk(self.path),
            "reranking": self._reranking_status(versions),
        }

    def _reranking_status(self, versions: dict[str, int]) -> dict:
        """Whether hybrid queries can re-rank: photos described by the library's checkpoint (only their stored
        cells are scored) and its query scorer in the cache (else the first query exports it, loading torch)."""
        try:
            version = self.models.version()
        except UserError as e:
            return {"checkpoint": None, "photos": 0, "scorer_cached": False, "note": str(e)}
        return {"checkpoint": version, "photos": int(versions.get(version, 0)),
                "scorer_cached": self.models.scorer_cached(version)}

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) for every file that could not be indexed, by path."""
        return queries.failed_files(self._open_store())


def _size_on_disk(db_path: Path) -> int:
    """Bytes of the library's files and thumbnails."""
    size = sum(p.stat().st_size for p in _paths.library_files(db_path) if p.exists())
    thumbs = _paths.thumbs_dir(db_path)
    if thumbs.is_dir():
        size += sum(f.stat().st_size for f in thumbs.rglob("*") if f.is_file())
    return int(size)
