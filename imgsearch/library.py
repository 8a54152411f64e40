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
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from imgsearch import paths as _paths
from imgsearch.indexer.pipeline import IndexReport, resolve_root, under_clause

# Fusion of the ranked lists of a hybrid query. "bm25": FTS/BM25 over captions + keywords +
# tags; "caption": cosine of the query's MiniLM embedding with each photo's best-caption
# embedding; "image": cosine with the photo embedding (checkpoints with a projection head).
# Chosen by Recall@K on Flickr8k dev (evaluate-retrieval); change here only.
FUSION: dict[str, Any] = {
    "method": "rrf",                 # "rrf" | "sum" (see imgsearch.search.fuse)
    "k_rrf": 60,
    "weights": {"bm25": 1.0, "caption": 1.0, "image": 1.0},
    "dense_weights": {"caption": 1.0, "image": 1.0},   # mode="dense": caption + image lists
    "overfetch": 4,                  # candidates per list = max(k * overfetch, k + 20)
}

MODES = ("hybrid", "bm25", "dense")


class LibraryError(Exception):
    """A user-facing error (bad path, unreadable library, another indexer running...). One line."""


@dataclass
class Hit:
    path: str                 # absolute
    score: float
    caption: str
    keywords: list[str]
    id: int
    tags: list[str] = field(default_factory=list)
    rank: int = 0

    def to_dict(self) -> dict:
        return {
            "rank": self.rank, "score": self.score, "path": self.path, "caption": self.caption,
            "keywords": list(self.keywords), "tags": list(self.tags), "id": self.id,
        }


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
        self._bm25 = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
            self.store = None
        self._vectors.clear()
        self._bm25 = None

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r})"

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
        """The version a re-index would write, without loading the model when possible."""
        if self._captioner is not None:
            return self._captioner.version
        from imgsearch.model import captioner as C

        path = Path(self.model) if self.model is not None else C.shipped_checkpoint()
        fn = getattr(C, "checkpoint_version", None)
        try:
            if fn is not None:
                return fn(path)
            if not path.is_file():
                raise C.CheckpointError(f"checkpoint not found: {path}")
            return C._file_version(path)
        except C.CheckpointError as e:
            raise LibraryError(str(e)) from None

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
              device: str | None = None, retry_failed: bool = False) -> IndexReport:
        """Index (incrementally) every photo under ``paths`` (folders or files).

        New and changed files are captioned; moved files (same content, old path gone) keep
        their captions; files gone from under ``paths`` are removed; photos captioned by
        another model version are re-captioned. Files that failed before are retried only
        when they change (size or mtime), or with ``retry_failed=True``.
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
            runner = IndexRunner(
                store, roots,
                get_captioner=lambda: self.captioner(device),
                get_version=self._captioner_version,
                get_embedder=self.embedder,
                batch_size=batch_size, workers=workers, beam=beam,
                progress=report_progress, retry_failed=retry_failed,
            )
            try:
                report = runner.run()
            except RootNotFoundError as e:
                raise LibraryError(f"no such folder or file: {e.filename}") from None
            self.refresh_caches()
        return report

    # ------------------------------------------------------------------ caches
    def refresh_caches(self) -> None:
        """Bring the FAISS files up to the database revision (rebuilds from SQLite when stale)."""
        for kind in ("caption", "image"):
            self._vector_index(kind)

    def _vector_index(self, kind: str):
        from imgsearch.search.dense import VectorIndex

        store = self._store()
        rev = store.revision()
        cached = self._vectors.get(kind)
        if cached is not None and cached[0] == rev:
            return cached[1]
        path = _paths.captions_faiss_path(self.path) if kind == "caption" else _paths.images_faiss_path(self.path)
        column = "caption_embedding" if kind == "caption" else "image_embedding"
        vi = VectorIndex.open(path, rev, lambda: self._load_vectors(column))
        self._vectors[kind] = (rev, vi)
        return vi

    def _load_vectors(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        from sqlalchemy import text

        ids, vecs = [], []
        with self._store().engine.connect() as conn:
            for pid, blob in conn.execute(text(
                f"SELECT id, {column} FROM photos WHERE {column} IS NOT NULL AND error IS NULL ORDER BY id"
            )):
                v = np.frombuffer(blob, dtype="<f4")
                if v.shape[0] == 384:
                    ids.append(pid)
                    vecs.append(v)
        if not ids:
            return np.zeros((0,), dtype=np.int64), np.zeros((0, 384), dtype=np.float32)
        return np.asarray(ids, dtype=np.int64), np.stack(vecs).astype(np.float32)

    # ------------------------------------------------------------------ query
    def query(self, text: str, k: int = 10, mode: str = "hybrid", in_folder: str | os.PathLike | None = None
              ) -> list[Hit]:
        """The ``k`` best photos for free ``text``. Photos whose file is gone are skipped."""
        if mode not in MODES:
            raise LibraryError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        text = (text or "").strip()
        if not text:
            raise LibraryError("empty query")
        k = int(k)
        if k < 1:
            return []
        store = self._store()
        folder = None
        if in_folder is not None:
            folder = resolve_root(in_folder)
            if not os.path.isdir(folder):
                raise LibraryError(f"no such folder: {folder}")
        total = self._count_searchable(folder)
        if total == 0:
            return []
        n = max(k * FUSION["overfetch"], k + 20)
        qvec = None
        if mode in ("dense", "hybrid"):
            qvec = self.embedder().embed([text])[0]
        allowed = self._ids_under(folder) if folder is not None else None
        while True:
            ranked = self._ranked(text, qvec, mode, n, allowed)
            hits = self._hits(ranked, k)
            if len(hits) >= k or n >= total:
                return hits
            n *= 4

    def _ranked(self, text: str, qvec, mode: str, n: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        from imgsearch.search.fuse import fuse

        lists: dict[str, list[tuple[int, float]]] = {}
        if mode in ("bm25", "hybrid"):
            lists["bm25"] = self._bm25_search(text, n, allowed)
        if mode in ("dense", "hybrid"):
            lists["caption"] = self._dense_search("caption", qvec, n, allowed)
            img = self._dense_search("image", qvec, n, allowed)
            if img:
                lists["image"] = img
        lists = {name: lst for name, lst in lists.items() if lst}
        if not lists:
            return []
        if len(lists) == 1:
            return next(iter(lists.values()))
        weights = FUSION["dense_weights"] if mode == "dense" else FUSION["weights"]
        return fuse(lists, {name: weights.get(name, 1.0) for name in lists}, method=FUSION["method"],
                    k_rrf=FUSION["k_rrf"])

    def _dense_search(self, kind: str, qvec, n: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        if allowed is not None and len(allowed) <= 20000:
            return self._dense_brute(kind, qvec, n, allowed)
        vi = self._vector_index(kind)
        if len(vi) == 0:
            return []
        ids, scores = vi.search(np.asarray(qvec, dtype=np.float32), n)
        out = [(int(i), float(s)) for i, s in zip(np.ravel(ids), np.ravel(scores)) if int(i) >= 0]
        if allowed is not None:
            out = [(i, s) for i, s in out if i in allowed]
        return out

    def _dense_brute(self, kind: str, qvec, n: int, allowed: set[int]) -> list[tuple[int, float]]:
        """Exact scores for a small id set straight from SQLite (``--in`` a folder)."""
        from sqlalchemy import bindparam, text

        if not allowed:
            return []
        column = "caption_embedding" if kind == "caption" else "image_embedding"
        ids, vecs = [], []
        stmt = text(f"SELECT id, {column} FROM photos WHERE id IN :ids AND {column} IS NOT NULL").bindparams(
            bindparam("ids", expanding=True))
        allowed_l = sorted(allowed)
        with self._store().engine.connect() as conn:
            for i in range(0, len(allowed_l), 900):
                for pid, blob in conn.execute(stmt, {"ids": allowed_l[i:i + 900]}):
                    ids.append(pid)
                    vecs.append(np.frombuffer(blob, dtype="<f4"))
        if not ids:
            return []
        scores = np.stack(vecs) @ np.asarray(qvec, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:n]
        return [(int(ids[j]), float(scores[j])) for j in order]

    def _bm25_search(self, text: str, n: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        out = self._bm25_index().search(text, n if allowed is None else max(n, len(allowed)))
        out = [(int(i), float(s)) for i, s in out]
        if allowed is not None:
            out = [(i, s) for i, s in out if i in allowed]
        return out[:n]

    def _bm25_index(self):
        raise NotImplementedError  # wired up once imgsearch.search.bm25 lands

    def _count_searchable(self, folder: str | None) -> int:
        from sqlalchemy import func, select

        from imgsearch.store.models import Photo

        q = select(func.count()).select_from(Photo).where(Photo.error.is_(None))
        if folder is not None:
            q = q.where(under_clause(Photo.path, folder))
        with self._store().session() as s:
            return int(s.execute(q).scalar_one())

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
        }

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
