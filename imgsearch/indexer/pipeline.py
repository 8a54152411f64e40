"""Indexing pipeline: scan → diff → decode (DataLoader workers) → caption → embed → store.

One run, in order:

1. ``scan`` the roots and ``diff`` against the rows stored under those roots (size + mtime_ns).
2. Work list: new files, changed files, and unchanged photos captioned by another model
   version. Unchanged files that failed before are *not* retried (retry-when-changed; pass
   ``retry_failed=True`` to retry them all, e.g. after installing a missing codec).
3. Decode in ``torch.utils.data.DataLoader`` worker processes. A worker never raises: each
   item comes back as ``(index, tensor | None, info)`` where ``info`` carries the file's stat,
   SHA-256 and size/EXIF date, or the error text; the collate function stacks the good ones.
4. Per batch, in the main process:
     * a *new* path whose content hash equals a stored photo whose file is gone → **moved**:
       the row is re-pointed (id, captions, tags, embeddings kept);
     * a file whose content equals a photo already captioned by this model version (a copy,
       or a changed file reverted to known content) → descriptions copied, no captioning;
     * a *changed* file whose hash did not change (``touch``) → only its stat is updated;
     * everything else → ``captioner.describe`` → caption vector (n-best captions + tags, text/caption_vectors.py).
   Then ONE SQLite transaction writes the batch (photos, n-best captions, tags/keywords,
   embeddings, error rows) and bumps ``meta.revision``. A run killed at any point leaves
   only whole batches behind; the next run's diff sees exactly what is missing.
5. Stored photos under the roots whose files are gone (and were not claimed by a move) are
   deleted (captions/tags cascade) in one last transaction. Folders the scan could not
   read are left alone, as are photos outside the roots being indexed, and so is a root
   that had photos but now shows none (unmounted drive?) unless ``prune_empty=True``.

The search caches (FAISS files) are not touched here; the Library refreshes them after
the run from SQLite, keyed by the revision.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sqlalchemy import delete, literal_column, or_, select, update

from imgsearch.paths import is_under, resolve_root
from imgsearch.store.db import Store, bump_revision
from imgsearch.store.queries import under_clause
from imgsearch.store.models import Caption, IndexRun, Photo, PhotoCells, Tag, pack_vector

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- report

@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    skipped_unchanged: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run only
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "failed": self.failed,
            "skipped_unchanged": self.skipped_unchanged,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- decoding (workers)

@dataclass
class WorkItem:
    path: str
    kind: str              # "new" | "changed" | "stale" (model version) | "retry" (failed before)
    photo_id: int | None   # the row at this path, if any


def decode_one(path: str, image_size: int, resize: str):
    """(tensor, info) for one file; raises on failure. Runs inside DataLoader workers."""
    from imgsearch.indexer import decode as dec
    from imgsearch.indexer.scan import content_hash

    st = os.stat(path)
    info: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    info["content_hash"] = content_hash(path)
    photo = dec.open_photo(path, target=image_size)
    info["width"], info["height"] = photo.width, photo.height
    info["taken_at"] = photo.taken_at.isoformat() if photo.taken_at is not None else None
    tensor = dec.to_model_input(photo, image_size, resize)
    return tensor, info


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    try:
        from imgsearch.indexer.decode import DecodeError
    except ImportError:  # pragma: no cover
        DecodeError = ()  # type: ignore
    if DecodeError and isinstance(e, DecodeError):
        return msg or "cannot decode"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class PhotoDataset:
    """``torch.utils.data.Dataset``-compatible: item i → ``(i, tensor | None, info)``; never raises."""

    def __init__(self, paths: Sequence[str], image_size: int, resize: str, offset: int = 0):
        self.paths = list(paths)
        self.image_size = image_size
        self.resize = resize
        self.offset = offset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            tensor, info = decode_one(path, self.image_size, self.resize)
            return self.offset + i, tensor, info
        except BaseException as e:  # noqa: BLE001 - a worker must never die on a bad file
            if isinstance(e, KeyboardInterrupt):
                raise
            return self.offset + i, None, {"error": _error_text(e)}


def collate(items):
    """Stack decoded tensors; failures travel alongside: ``(ok_idx, tensor|None, ok_infos, failed)``."""
    import torch

    ok = [(i, t, info) for i, t, info in items if t is not None]
    failed = [(i, info) for i, t, info in items if t is None]
    images = torch.stack([t for _, t, _ in ok]) if ok else None
    return [i for i, _, _ in ok], images, [info for _, _, info in ok], failed


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def _model_threads(workers: int):
    """Model threads in the main process while ``workers`` decode processes run: the cores the workers
    leave free (at least 1). On the 2-core machine, 2 workers and 2 model threads oversubscribe the cores:
    bench/index_throughput.py measured 15.2 photos/s that way vs 21.3 with 1 model thread (324 photos)."""
    import torch

    before = torch.get_num_threads()
    want = max(1, min(before, (os.cpu_count() or 1) - workers)) if workers > 0 else before
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    return max(0, min(4, os.cpu_count() or 1))


# A batch that takes longer than this to decode means a worker hung (a decoder stuck on a
# malicious file): the run isolates and records that file instead of waiting forever.
BATCH_TIMEOUT_S = 600
ISOLATE_TIMEOUT_S = 120


def _crash_reason(e: BaseException) -> str:
    msg = str(e)
    if "timed out" in msg:
        return "decoder hung (timed out)"
    m = re.search(r"killed by signal: ([^.]+)", msg)
    if m:
        return f"decoder crashed ({m.group(1).strip()})"
    return "decoder crashed"


def batches(paths: Sequence[str], image_size: int, resize: str, batch_size: int, workers: int, pin_memory=False,
            offset: int = 0, timeout: float | None = None):
    """Yield collated batches in order (indices are ``offset + i``); ``workers=0`` decodes in this process."""
    from torch.utils.data import DataLoader

    ds = PhotoDataset(paths, image_size, resize, offset)
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {"worker_init_fn": _worker_init, "prefetch_factor": 2, "persistent_workers": False,
              "timeout": BATCH_TIMEOUT_S if timeout is None else timeout}
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=pin_memory, **kw,
    )
    it = iter(loader)
    try:
        yield from it
    except RuntimeError:
        # a worker died or hung: kill the others now instead of waiting for them to notice
        # (first stop torch watching their pids, or their deaths raise over this error)
        try:
            from torch.utils.data import _utils

            if getattr(it, "_worker_pids_set", False):
                _utils.signal_handling._remove_worker_pids(id(it))
                it._worker_pids_set = False
        except Exception:  # pragma: no cover - private torch API moved
            pass
        for w in getattr(it, "_workers", None) or []:
            try:
                if w.is_alive():
                    w.kill()
            except Exception:  # pragma: no cover
                pass
        raise
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


# --------------------------------------------------------------------------- the run

@dataclass
class _Described:
    captions: list[tuple[str, float]]
    tags: list[tuple[str, float]]
    keywords: list[str]
    caption_embedding: bytes | None
    image_embedding: bytes | None
    cells: bytes | None = None           # packed decoder grid cells (re-ranking), see model/rerank.py


def doc_text(captions: Sequence[str], keywords: Sequence[str], tags: Sequence[str]) -> str:
    """The BM25 document of a photo: its n-best captions, keywords and tags (normalised by bm25)."""
    return " . ".join([*captions, " ".join(keywords), " ".join(tags)])


def rebuild_search_text(session) -> int:
    """Rewrite every BM25 document from the stored captions/keywords/tags (one transaction: the caller's)."""
    from imgsearch.search import bm25

    bm25.ensure_fts(session)
    bm25.clear(session)
    caps: dict[int, list[str]] = {}
    for pid, text in session.execute(
        select(Caption.photo_id, Caption.text).join(Photo, Photo.id == Caption.photo_id)
        .where(Photo.error.is_(None)).order_by(Caption.photo_id, Caption.rank)
    ):
        caps.setdefault(pid, []).append(text)
    kw: dict[int, list[str]] = {}
    tg: dict[int, list[str]] = {}
    for pid, kind, term in session.execute(
        select(Tag.photo_id, Tag.kind, Tag.term).order_by(Tag.photo_id, literal_column("tags.rowid"))
    ):
        (kw if kind == "keyword" else tg).setdefault(pid, []).append(term)
    docs = [(pid, doc_text(c, kw.get(pid, []), tg.get(pid, []))) for pid, c in caps.items()]
    return bm25.upsert_documents(session, docs)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _parse_taken(v) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        return None


class IndexRunner:
    """One index run over ``roots``. ``get_captioner()`` is called only when something needs captioning."""

    def __init__(
        self,
        store: Store,
        roots: Iterable[str | os.PathLike],
        *,
        get_captioner: Callable[[], Any],
        get_version: Callable[[], str],
        get_embedder: Callable[[], Any],
        batch_size: int = 32,
        workers: int | None = None,
        beam: int = 3,
        n_best: int = 3,
        progress: ProgressFn | None = None,
        retry_failed: bool = False,
        prune_empty: bool = False,
    ):
        self.store = store
        self.roots_in = [os.fspath(r) for r in roots]
        self.get_captioner = get_captioner
        self.get_version = get_version
        self.get_embedder = get_embedder
        self.batch_size = max(1, int(batch_size))
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.beam = beam
        self.n_best = n_best
        self.progress = progress
        self.retry_failed = retry_failed
        self.prune_empty = prune_empty
        self.report = IndexReport()
        self.touched: set[int] = set()  # photo ids whose embeddings may have changed (or rows gone)

    # ---------------------------------------------------------------- plan
    def plan(self):
        from imgsearch.indexer.scan import diff, scan

        scan_errors: list[tuple[str, str]] = []
        entries = list(scan(self.roots_in, on_error=lambda p, r: scan_errors.append((p, r))))
        self.roots = [resolve_root(r) for r in self.roots_in]
        rows = {}
        with self.store.session() as s:
            # roots in chunks: `imgsearch index *.jpg` passes thousands of them, more than one SQL
            # expression may hold
            for i in range(0, len(self.roots), 200):
                q = select(Photo.id, Photo.path, Photo.size, Photo.mtime_ns, Photo.error, Photo.model_version,
                           Photo.caption).where(or_(*[under_clause(Photo.path, r) for r in self.roots[i:i + 200]]))
                rows.update({r.path: r for r in s.execute(q)})
        d = diff(entries, {p: (r.size, r.mtime_ns) for p, r in rows.items()}, [p for p, _ in scan_errors])
        self.scan_errors = scan_errors
        self.on_disk = {e.path for e in entries}
        self.gone = {p: rows[p].id for p in d.gone}
        if not self.prune_empty:
            # A root that had photos and now shows none is far more often an unmounted drive or
            # an offline share than a deliberate "delete everything": keep its rows, say so.
            for r in self.roots:
                if not os.path.isdir(r) or any(is_under(p, r) for p in self.on_disk):  # a file root just goes
                    continue
                kept = [p for p in self.gone if is_under(p, r)]
                if kept:
                    for p in kept:
                        del self.gone[p]
                    scan_errors.append((r, f"no photos found here: kept its {len(kept)} indexed photos "
                                           "(unmounted drive?); index with prune_empty / --prune-empty to drop them"))

        work: list[WorkItem] = [WorkItem(e.path, "new", None) for e in d.new]
        work += [WorkItem(e.path, "changed", rows[e.path].id) for e in d.changed]
        unchanged_ok = [p for p in d.unchanged if rows[p].error is None]
        unchanged_failed = [p for p in d.unchanged if rows[p].error is not None]
        version = None
        if unchanged_ok:
            version = self.get_version()
        stale = [p for p in unchanged_ok if rows[p].model_version != version or rows[p].caption is None]
        work += [WorkItem(p, "stale", rows[p].id) for p in stale]
        if self.retry_failed:
            work += [WorkItem(p, "retry", rows[p].id) for p in unchanged_failed]
        else:
            self.report.skipped_unchanged += len(unchanged_failed)
        self.report.skipped_unchanged += len(unchanged_ok) - len(stale)
        self.work = work
        return work

    # ---------------------------------------------------------------- run
    def run(self) -> IndexReport:
        t0 = time.monotonic()
        started = _now()
        self.plan()
        run_id = self._start_run(started)
        self._check_text_embedder()
        self.report.errors.extend(self.scan_errors)
        total = len(self.work)
        if self.progress:
            self.progress(0, total)
        if self.work:
            cap = self.get_captioner()
            self.version = cap.version
            self.claimed: set[int] = set()
            pin = getattr(getattr(cap, "device", None), "type", "cpu") == "cuda"
            with _model_threads(0 if pin else self.workers):
                self._caption_all(cap, pin, total)
        self._remove_gone()
        self.report.seconds = time.monotonic() - t0
        self._finish_run(run_id)
        return self.report

    def _caption_all(self, cap, pin: bool, total: int) -> None:
        paths = [w.path for w in self.work]
        size, resize = cap.image_size, getattr(cap, "resize", "squash")
        pos = 0  # every item before pos is committed
        while pos < total:
            try:
                for ok_idx, images, infos, failed in batches(
                    paths[pos:], size, resize, self.batch_size, self.workers, pin_memory=pin, offset=pos,
                ):
                    self._do_batch(cap, ok_idx, images, infos, failed)
                    pos += len(ok_idx) + len(failed)
                    if self.progress:
                        self.progress(pos, total)
            except RuntimeError as e:
                if self.workers == 0 or "DataLoader" not in str(e):
                    raise
                # A decoder crashed (segfault in a native library) or hung. Decode the first
                # unfinished file alone; if that crashes too, it is the culprit: record it.
                pos = self._isolate(cap, paths, pos, size, resize, pin)
                if self.progress:
                    self.progress(pos, total)

    def _embedding_version(self) -> str:
        """What the stored caption embeddings were made with: the text embedder and the caption-vector recipe."""
        from imgsearch.text.caption_vectors import RECIPE

        return f"{self.get_embedder().version}|{RECIPE}"

    def _check_text_embedder(self, chunk: int = 256) -> None:
        """Caption embeddings made by another text embedder (or another caption-vector recipe) are useless
        to queries: re-embed them all from the stored captions and tags (cheap next to captioning)."""
        from imgsearch.store.db import get_meta, set_meta
        from imgsearch.text.caption_vectors import N_BEST, caption_vectors

        with self.store.session() as s:
            stored = get_meta(s, "text_embedder")
            n = s.execute(select(Photo.id).where(Photo.caption.is_not(None)).limit(1)).first()
        if stored is None and n is None:
            return  # empty library: the first batch records the version
        version = self._embedding_version()
        if stored == version:
            return
        emb = self.get_embedder()
        with self.store.session() as s:
            todo = [pid for (pid,) in s.execute(select(Photo.id).where(Photo.caption.is_not(None),
                                                                        Photo.error.is_(None)).order_by(Photo.id))]
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            caps: dict[int, list[str]] = {pid: [] for pid in part}
            tags: dict[int, list[str]] = {pid: [] for pid in part}
            with self.store.session() as s:
                for pid, text in s.execute(select(Caption.photo_id, Caption.text)
                                           .where(Caption.photo_id.in_(part), Caption.rank < N_BEST)
                                           .order_by(Caption.photo_id, Caption.rank)):
                    caps[pid].append(text)
                for pid, term in s.execute(select(Tag.photo_id, Tag.term)
                                           .where(Tag.photo_id.in_(part), Tag.kind == "tag")
                                           .order_by(Tag.photo_id, Tag.score.desc(), Tag.term)):
                    tags[pid].append(term)
                best = dict(s.execute(select(Photo.id, Photo.caption).where(Photo.id.in_(part))).all())
            vecs = caption_vectors(emb, [caps[pid] or [best.get(pid) or ""] for pid in part],
                                   [tags[pid] for pid in part])
            with self.store.write() as s:
                for pid, v in zip(part, vecs):
                    s.execute(update(Photo).where(Photo.id == pid).values(caption_embedding=pack_vector(v)))
                bump_revision(s)
            self.touched.update(part)
        with self.store.write() as s:
            set_meta(s, "text_embedder", version)

    def _isolate(self, cap, paths: list[str], pos: int, size: int, resize: str, pin: bool) -> int:
        try:
            batch = next(iter(batches([paths[pos]], size, resize, 1, 1, pin_memory=pin, offset=pos,
                                      timeout=min(ISOLATE_TIMEOUT_S, BATCH_TIMEOUT_S))))
        except RuntimeError as e:
            if "DataLoader" not in str(e):
                raise
            self._do_batch(cap, [], None, [], [(pos, {"error": _crash_reason(e)})])
        else:
            self._do_batch(cap, *batch)
        return pos + 1

    # ---------------------------------------------------------------- batch
    def _do_batch(self, cap, ok_idx: list[int], images, infos: list[dict], failed: list[tuple[int, dict]]):
        items = [self.work[i] for i in ok_idx]
        hashes = sorted({info["content_hash"] for info in infos})
        by_hash: dict[str, list] = {}
        own_hash: dict[int, str | None] = {}
        with self.store.session() as s:
            if hashes:
                for r in s.execute(
                    select(Photo.id, Photo.path, Photo.model_version, Photo.error, Photo.caption, Photo.content_hash)
                    .where(Photo.content_hash.in_(hashes))
                ):
                    by_hash.setdefault(r.content_hash, []).append(r)
            ids = [w.photo_id for w in items if w.photo_id is not None]
            if ids:
                own_hash = dict(s.execute(select(Photo.id, Photo.content_hash).where(Photo.id.in_(ids))).all())

        moves: list[tuple[int, WorkItem, dict, int]] = []    # (pos, item, info, old photo id)
        copies: list[tuple[int, WorkItem, dict, int]] = []   # (pos, item, info, source photo id)
        touches: list[tuple[int, WorkItem, dict]] = []
        describe: list[tuple[int, WorkItem, dict]] = []
        for pos, (w, info) in enumerate(zip(items, infos)):
            h = info["content_hash"]
            cands = [r for r in by_hash.get(h, []) if r.path != w.path and r.id not in self.claimed]
            if w.photo_id is None:
                gone = [r for r in cands if self._file_gone(r.path)]
                if gone:
                    r = gone[0]
                    self.claimed.add(r.id)
                    self.gone.pop(r.path, None)
                    moves.append((pos, w, info, r.id))
                    if r.error is not None or r.model_version != self.version or r.caption is None:
                        describe.append((pos, w, info))
                    continue
            if w.kind == "changed" and own_hash.get(w.photo_id) == h:
                own = next((r for r in by_hash.get(h, []) if r.id == w.photo_id), None)
                if own is not None and own.error is None and own.model_version == self.version and own.caption:
                    touches.append((pos, w, info))
                    continue
            good = [r for r in cands if r.error is None and r.model_version == self.version and r.caption]
            if good:
                copies.append((pos, w, info, good[0].id))
                continue
            describe.append((pos, w, info))

        described: dict[int, _Described] = {}
        if describe:
            import torch

            from imgsearch.text.caption_vectors import caption_vectors

            sel = torch.tensor([pos for pos, _, _ in describe], dtype=torch.long)
            descs = cap.describe(images.index_select(0, sel), beam=self.beam, n_best=self.n_best)
            emb = caption_vectors(self.get_embedder(), [[c for c, _ in d.captions] for d in descs],
                                  [[t for t, _ in d.tags] for d in descs])
            for k, ((pos, _, _), d) in enumerate(zip(describe, descs)):
                described[pos] = _Described(
                    list(d.captions), list(d.tags), list(d.keywords), pack_vector(emb[k]),
                    pack_vector(d.image_embedding) if getattr(d, "image_embedding", None) is not None else None,
                    getattr(d, "cells", None),
                )

        now = _now()
        moved_pos = {pos for pos, _, _, _ in moves}
        self._docs: list[tuple[int, str]] = []
        with self.store.write() as s:
            # moves first: re-point the old row at the new path
            for pos, w, info, old_id in moves:
                s.execute(update(Photo).where(Photo.id == old_id).values(
                    path=w.path, folder=os.path.dirname(w.path), **self._stat_values(info)))
                if pos in described:
                    self._write_description(s, old_id, described[pos], now)
                self.report.moved += 1
            for pos, w, info, src_id in copies:
                pid = self._upsert_photo(s, w, info, now)
                self._copy_description(s, src_id, pid, now)
                self._count(w)
            for pos, w, info in touches:
                s.execute(update(Photo).where(Photo.id == w.photo_id).values(**self._stat_values(info)))
                self.report.skipped_unchanged += 1
            for pos, w, info in describe:
                if pos in moved_pos:
                    continue
                pid = self._upsert_photo(s, w, info, now)
                self._write_description(s, pid, described[pos], now)
                self._count(w)
            for i, info in failed:
                w = self.work[i]
                self._write_failure(s, w, info["error"], now)
            if self._docs:
                from imgsearch.search import bm25

                bm25.upsert_documents(s, self._docs)
            if describe and not getattr(self, "_embedder_recorded", False):
                from imgsearch.store.db import set_meta

                set_meta(s, "text_embedder", self._embedding_version())
                self._embedder_recorded = True
            bump_revision(s)

    def _count(self, w: WorkItem) -> None:
        if w.kind == "new":
            self.report.added += 1
        else:
            self.report.updated += 1

    def _file_gone(self, path: str) -> bool:
        if path in self.gone:
            return not os.path.exists(path)
        if path in self.on_disk:
            return False
        if any(is_under(path, r) for r in self.roots):
            return False  # under our roots but not gone per the scan (unreachable folder): leave it
        return not os.path.exists(path)

    @staticmethod
    def _stat_values(info: dict) -> dict:
        return {
            "size": info["size"],
            "mtime_ns": info["mtime_ns"],
            "content_hash": info["content_hash"],
            "width": info.get("width"),
            "height": info.get("height"),
            "taken_at": _parse_taken(info.get("taken_at")),
        }

    def _upsert_photo(self, s, w: WorkItem, info: dict, now: datetime) -> int:
        vals = self._stat_values(info)
        if w.photo_id is not None:
            s.execute(update(Photo).where(Photo.id == w.photo_id).values(**vals))
            return w.photo_id
        p = Photo(path=w.path, folder=os.path.dirname(w.path), indexed_at=now, **vals)
        s.add(p)
        s.flush()
        return p.id

    def _write_description(self, s, pid: int, d: _Described, now: datetime) -> None:
        s.execute(delete(Caption).where(Caption.photo_id == pid))
        s.execute(delete(Tag).where(Tag.photo_id == pid))
        s.execute(update(Photo).where(Photo.id == pid).values(
            caption=d.captions[0][0] if d.captions else "",
            model_version=self.version, error=None, indexed_at=now,
            caption_embedding=d.caption_embedding, image_embedding=d.image_embedding,
        ))
        self._set_cells(s, pid, d.cells)
        if d.captions:
            s.execute(Caption.__table__.insert(), [
                {"photo_id": pid, "rank": r, "text": t, "score": float(sc)} for r, (t, sc) in enumerate(d.captions)
            ])
        tags: dict[tuple[str, str], float] = {}
        for term, sc in d.tags:
            k = ("tag", term)
            tags[k] = max(float(sc), tags.get(k, float("-inf")))
        for term in d.keywords:
            tags.setdefault(("keyword", term), 1.0)
        if tags:
            s.execute(Tag.__table__.insert(), [
                {"photo_id": pid, "kind": k, "term": t, "score": sc} for (k, t), sc in tags.items()
            ])
        self.touched.add(pid)
        self._docs.append((pid, doc_text([t for t, _ in d.captions], [t for (k, t) in tags if k == "keyword"],
                                         [t for (k, t) in tags if k == "tag"])))

    @staticmethod
    def _set_cells(s, pid: int, data: bytes | None) -> None:
        """Replace (or, with None, drop) the photo's re-ranking cells."""
        s.execute(delete(PhotoCells).where(PhotoCells.photo_id == pid))
        if data is not None:
            s.execute(PhotoCells.__table__.insert(), [{"photo_id": pid, "data": data}])

    def _copy_description(self, s, src: int, dst: int, now: datetime) -> None:
        row = s.execute(select(Photo.caption, Photo.model_version, Photo.caption_embedding, Photo.image_embedding)
                        .where(Photo.id == src)).one()
        s.execute(delete(Caption).where(Caption.photo_id == dst))
        s.execute(delete(Tag).where(Tag.photo_id == dst))
        s.execute(update(Photo).where(Photo.id == dst).values(
            caption=row.caption, model_version=row.model_version, error=None, indexed_at=now,
            caption_embedding=row.caption_embedding, image_embedding=row.image_embedding,
        ))
        self._set_cells(s, dst, s.execute(select(PhotoCells.data).where(PhotoCells.photo_id == src)).scalar())
        caps = [{"photo_id": dst, "rank": c.rank, "text": c.text, "score": c.score}
                for c in s.execute(select(Caption).where(Caption.photo_id == src)).scalars()]
        tags = [{"photo_id": dst, "kind": t.kind, "term": t.term, "score": t.score}
                for t in s.execute(select(Tag).where(Tag.photo_id == src).order_by(literal_column("tags.rowid"))).scalars()]
        if caps:
            s.execute(Caption.__table__.insert(), caps)
        if tags:
            s.execute(Tag.__table__.insert(), tags)
        self.touched.add(dst)
        self._docs.append((dst, doc_text([c["text"] for c in caps], [t["term"] for t in tags if t["kind"] == "keyword"],
                                         [t["term"] for t in tags if t["kind"] == "tag"])))

    def _write_failure(self, s, w: WorkItem, reason: str, now: datetime) -> None:
        try:
            st = os.stat(w.path)
        except FileNotFoundError:
            # vanished between scan and decode: it is simply gone
            if w.photo_id is not None:
                s.execute(delete(Photo).where(Photo.id == w.photo_id))  # trigger drops its BM25 document
                self.touched.add(w.photo_id)
                self.report.removed += 1
            return
        except OSError:
            st = None
        size = st.st_size if st else 0
        mtime = st.st_mtime_ns if st else 0
        vals = dict(size=size, mtime_ns=mtime, error=reason, caption=None, model_version=None,
                    caption_embedding=None, image_embedding=None, indexed_at=now, width=None, height=None,
                    taken_at=None)
        if w.photo_id is not None:
            from imgsearch.search import bm25

            s.execute(delete(Caption).where(Caption.photo_id == w.photo_id))
            s.execute(delete(Tag).where(Tag.photo_id == w.photo_id))
            self._set_cells(s, w.photo_id, None)
            s.execute(update(Photo).where(Photo.id == w.photo_id).values(**vals))
            bm25.delete_documents(s, [w.photo_id])
            self.touched.add(w.photo_id)
        else:
            s.add(Photo(path=w.path, folder=os.path.dirname(w.path), **vals))
        self.report.failed += 1
        self.report.errors.append((w.path, reason))

    # ---------------------------------------------------------------- end of run
    def _remove_gone(self) -> None:
        ids = [pid for path, pid in self.gone.items() if not os.path.exists(path)]
        if not ids:
            return
        with self.store.write() as s:
            for i in range(0, len(ids), 500):  # captions/tags cascade; a trigger drops the BM25 documents
                s.execute(delete(Photo).where(Photo.id.in_(ids[i:i + 500])))
            bump_revision(s)
        self.touched.update(ids)
        self.report.removed += len(ids)

    def _start_run(self, started: datetime) -> int:
        with self.store.write() as s:
            run = IndexRun(started_at=started, roots=json.dumps(self.roots))
            s.add(run)
            s.flush()
            return run.id

    def _finish_run(self, run_id: int) -> None:
        r = self.report
        with self.store.write() as s:
            s.execute(update(IndexRun).where(IndexRun.id == run_id).values(
                finished_at=_now(), model_version=getattr(self, "version", None), added=r.added,
                updated=r.updated, moved=r.moved, removed=r.removed, failed=r.failed,
                skipped_unchanged=r.skipped_unchanged, seconds=r.seconds,
            ))
