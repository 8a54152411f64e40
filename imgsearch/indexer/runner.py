"""One index run: plan → decode → rules → caption → embed → store.

One run, in order:

1. :func:`plan.make_plan <imgsearch.indexer.plan.make_plan>` scans the roots and diffs against the
   rows stored under those roots (size + mtime_ns). Work list: new files, changed files, and
   unchanged photos captioned by another model version. Unchanged files that failed before are
   *not* retried (retry-when-changed; pass ``retry_failed=True`` to retry them all, e.g. after
   installing a missing codec), unless they failed under another model version.
2. Stored caption embeddings made by another text embedder are re-embedded (``reembed.py``).
3. :func:`loader.batches <imgsearch.indexer.loader.batches>` decodes in ``torch.utils.data.DataLoader``
   worker processes; a bad file comes back as an error text, never as a dead worker.
4. Per batch, in the main process, ``rules.py`` decides for each decoded file: **moved** (a new path
   with the content of a stored photo whose file is gone: the row is re-pointed, id, captions, tags,
   embeddings kept), **touch** (a changed file whose hash did not change: only its stat is updated),
   **copy** (content already described by this model version: the description is copied), or
   **describe** (``captioner.describe`` → caption vector: n-best captions + tags,
   text/caption_vectors.py). Then ONE SQLite transaction (``store/writes.py``) writes the batch
   (photos, n-best captions, tags/keywords, embeddings, error rows, BM25 documents) and bumps
   ``meta.revision``. A run killed at any point leaves only whole batches behind; the next run's
   diff sees exactly what is missing. A decoder that crashes or hangs its worker costs only its file.
   A broken *model* is not blamed on the photos: the captioner's preprocessing is tried on a blank
   picture before the first batch, and when every photo of a batch fails in the model step — alone
   too, for one reason — the run stops with a :class:`ModelError` and records nothing against them
   (batches committed before stay). A failure is recorded with the model version it happened under;
   the plan retries it when that version changes (``rules.retry_failure``).
5. Stored photos under the roots whose files are gone (and were not claimed by a move) are
   deleted (captions/tags cascade) in one last transaction. Folders the scan could not
   read are left alone, as are photos outside the roots being indexed, and so is every
   folder (a root or below it) that had photos but now shows none (unmounted drive?) unless
   ``prune_empty=True`` (plan.keep_empty_folders; a move may still claim their rows).

The search caches (FAISS files) are not touched here; the Library refreshes them after
the run from SQLite, keyed by the revision.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Iterable

from imgsearch.errors import ModelError
from imgsearch.indexer import rules
from imgsearch.indexer.loader import (BATCH_TIMEOUT_S, ISOLATE_TIMEOUT_S, batches, crash_reason, default_workers,
                                      model_threads)
from imgsearch.indexer.plan import Plan, WorkItem, make_plan
from imgsearch.indexer.ocr import OCR_VERSION
from imgsearch.indexer.reembed import META_KEY, embedding_version, refresh_caption_embeddings
from imgsearch.indexer.geotag import place_stale
from imgsearch.indexer.report import IndexReport
from imgsearch.model.labels import LABELS_VERSION
from imgsearch.search import bm25
from imgsearch.store import writes
from imgsearch.store.db import Store, bump_revision, set_meta
from imgsearch.store.models import pack_vector
from imgsearch.store.queries import photos_by_hash

ProgressFn = Callable[[int, int], None]
log = logging.getLogger(__name__)


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
        verify: bool = False,
        ocr: bool = False,
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
        self.verify = verify
        self.ocr = ocr                  # read the text in photos (indexer/ocr.py; the caller checked it is installed)
        self.report = IndexReport()
        self.touched: set[int] = set()  # photo ids whose embeddings may have changed (or rows gone)
        self.plan: Plan | None = None   # set by run()
        self.version: str | None = None  # the captioner's model version, once it is loaded
        self.claimed: set[int] = set()  # stored photos re-pointed by moves: not gone, not copy sources
        self.embedder_recorded = False  # meta.text_embedder written by this run

    # ---------------------------------------------------------------- run
    def run(self) -> IndexReport:
        t0 = time.monotonic()
        started = writes.now()
        self.plan = plan = make_plan(self.store, self.roots_in, get_version=self.get_version,
                                     retry_failed=self.retry_failed, prune_empty=self.prune_empty,
                                     verify=self.verify, ocr=self.ocr)
        self.report.skipped_unchanged += plan.skipped_unchanged
        with self.store.write() as s:
            run_id = writes.start_run(s, started, plan.roots)
        self.touched.update(refresh_caption_embeddings(self.store, self.get_embedder))
        self.report.errors.extend(plan.errors)
        total = len(plan.work)
        if self.progress:
            self.progress(0, total)
        if plan.work:
            cap = self.get_captioner()
            self.version = cap.version
            pin = getattr(getattr(cap, "device", None), "type", "cpu") == "cuda"
            with model_threads(0 if pin else self.workers):
                self._caption_all(cap, pin, total)
        self.touched.update(place_stale(self.store, plan, self.report))   # photos from before places: EXIF only
        self._remove_gone()
        self.report.seconds = time.monotonic() - t0
        with self.store.write() as s:
            writes.finish_run(s, run_id, self.report, self.version)
        return self.report

    def _caption_all(self, cap, pin: bool, total: int) -> None:
        paths = [w.path for w in self.plan.work]
        self.ocr_flags = [w.ocr for w in self.plan.work]
        size, resize = cap.image_size, getattr(cap, "resize", "squash")
        check_preprocessing(cap, size, resize)
        pos = 0  # every item before pos is committed
        while pos < total:
            try:
                for ok_idx, images, infos, failed in batches(
                    paths[pos:], size, resize, self.batch_size, self.workers, pin_memory=pin, offset=pos,
                    ocr=self.ocr_flags[pos:],
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

    def _isolate(self, cap, paths: list[str], pos: int, size: int, resize: str, pin: bool) -> int:
        try:
            batch = next(iter(batches([paths[pos]], size, resize, 1, 1, pin_memory=pin, offset=pos,
                                      timeout=min(ISOLATE_TIMEOUT_S, BATCH_TIMEOUT_S), ocr=self.ocr_flags[pos:pos + 1])))
        except RuntimeError as e:
            if "DataLoader" not in str(e):
                raise
            self._do_batch(cap, [], None, [], [(pos, {"error": crash_reason(e)})])
        else:
            self._do_batch(cap, *batch)
        return pos + 1

    # ---------------------------------------------------------------- batch
    def _do_batch(self, cap, ok_idx: list[int], images, infos: list[dict], failed: list[tuple[int, dict]]):
        aside = [k for k, i in enumerate(ok_idx) if self.plan.work[i].reason in ("ocr", "labels")]
        if aside:     # described photos whose text was read now (index --ocr on an older library): no captioning
            self._write_text([(self.plan.work[ok_idx[k]], infos[k]) for k in aside])
            reread = {k for k in aside if self.plan.work[ok_idx[k]].reason == "ocr"}
            if reread:
                keep = [k for k in range(len(ok_idx)) if k not in reread]
                ok_idx, infos = [ok_idx[k] for k in keep], [infos[k] for k in keep]
                images = images[keep] if keep else None
        relabel = [k for k, i in enumerate(ok_idx) if self.plan.work[i].reason == "labels"]
        if relabel:   # described photos that only need their zero-shot labels: no rules, no captioning
            found, _ = self._model_step(cap, lambda ks: self._find_labels(cap, images, ks), relabel)
            if found:  # one that fails alone keeps its description and is tried again next run
                ks = sorted(found)
                self._write_labels([self.plan.work[ok_idx[k]] for k in ks], [found[k] for k in ks])
            skip = set(relabel)
            keep = [k for k in range(len(ok_idx)) if k not in skip]
            ok_idx, infos = [ok_idx[k] for k in keep], [infos[k] for k in keep]
            images = images[keep] if keep else None
        items = [self.plan.work[i] for i in ok_idx]
        with self.store.session() as s:
            by_hash = photos_by_hash(s, sorted({info["content_hash"] for info in infos}))
        files = [rules.Decoded(w.path, w.reason, w.photo_id, info["content_hash"]) for w, info in zip(items, infos)]
        todo = rules.decide(files, by_hash, self.version, self.claimed, self.plan.file_gone)
        self.claimed |= todo.claimed
        described, broken = self._model_step(cap, lambda ps: self._describe(cap, images, ps), todo.describe)

        at = writes.now()
        moved = {m.pos for m in todo.moves}
        # a photo the model fails on alone (while others pass) is recorded failed; a moved one keeps its
        # old description (another version's: described again next run)
        failed = failed + [(ok_idx[pos], {"error": f"could not be described: {why}"})
                           for pos, why in broken.items() if pos not in moved]
        docs: list[writes.Document] = []
        writes.resolve_places(infos)   # GPS → place outside the write lock (the gazetteer loads on first use)
        with self.store.write() as s:
            for m in todo.moves:  # moves first: re-point the old row at the new path
                writes.move_photo(s, m.old_id, items[m.pos].path, infos[m.pos])
                self._text(s, items[m.pos], m.old_id, infos[m.pos], same=True)
                if m.pos in described:
                    docs.append(writes.write_description(s, m.old_id, described[m.pos], self.version, at))
                self.report.moved += 1
            for c in todo.copies:
                w = items[c.pos]
                pid = writes.upsert_photo(s, w.path, w.photo_id, infos[c.pos], at)
                docs.append(writes.copy_description(s, c.src_id, pid, at))
                self._text(s, w, pid, infos[c.pos], src=c.src_id)
                self._count(w)
            for pos in todo.touches:
                writes.update_stat(s, items[pos].photo_id, infos[pos])
                self._text(s, items[pos], items[pos].photo_id, infos[pos], same=True)
                self.report.skipped_unchanged += 1
            for pos in todo.describe:
                if pos in moved or pos in broken:
                    continue
                w = items[pos]
                pid = writes.upsert_photo(s, w.path, w.photo_id, infos[pos], at)
                docs.append(writes.write_description(s, pid, described[pos], self.version, at))
                self._text(s, w, pid, infos[pos])
                self._count(w)
            for i, info in failed:
                self._fail(s, self.plan.work[i], info["error"], at)
            self.touched.update(pid for pid, _ in docs)
            if docs:
                bm25.upsert_documents(s, docs)
            if todo.describe and not self.embedder_recorded:
                set_meta(s, META_KEY, embedding_version(self.get_embedder()))
                self.embedder_recorded = True
            bump_revision(s)

    def _text(self, s, w: WorkItem, pid: int, info: dict, src: int | None = None, same: bool = False) -> None:
        """Store the text read in photo ``pid`` (info "ocr_text"), else the text of its copy ``src``; a photo
        whose content changed and was not read loses its old text (``same``: the content is the same)."""
        if "ocr_text" in info:
            writes.write_ocr(s, pid, info["ocr_text"], OCR_VERSION)
            self.report.text_read += 1
        elif "ocr_error" in info:
            log.warning("could not read the text in %s: %s", w.path, info["ocr_error"])
        elif src is not None:
            writes.copy_ocr(s, src, pid)
        elif not same and w.reason == "changed":   # new rows and failed ones have no text to drop
            writes.write_ocr(s, pid, None, None)

    def _write_text(self, pairs: list[tuple[WorkItem, dict]]) -> None:
        """The text read in described photos (one transaction)."""
        pairs = [(w, info) for w, info in pairs if "ocr_text" in info or "ocr_error" in info]
        if not pairs:
            return
        with self.store.write() as s:
            for w, info in pairs:
                self._text(s, w, w.photo_id, info, same=True)
            bump_revision(s)

    def _model_step(self, cap, step: Callable[[list[int]], dict], positions: list[int]) -> tuple[dict, dict]:
        """``step(positions)`` → {position: result}, for a batch; when it raises, each position is tried alone.
        Returns (results, {position: reason} of those that failed alone). Raises ModelError when every one
        fails alone for the same reason: the model is broken, not the photos."""
        if not positions:
            return {}, {}
        try:
            return step(positions), {}
        except Exception as e:  # noqa: BLE001 - any failure of the model step is judged below
            first = _reason(e)
        done: dict = {}
        broken: dict[int, str] = {positions[0]: first} if len(positions) == 1 else {}
        for pos in positions if len(positions) > 1 else ():
            try:
                done.update(step([pos]))
            except Exception as e:  # noqa: BLE001
                broken[pos] = _reason(e)
        reasons = set(broken.values())
        if not done and len(reasons) == 1:
            raise ModelError(f"{model_name(cap)} fails on every photo ({reasons.pop()}); nothing was recorded "
                             "against the photos: fix or replace the checkpoint and index again")
        if broken:
            log.warning("the model failed on %d photo(s) of a batch: %s", len(broken), first)
        return done, broken

    def _find_labels(self, cap, images, positions: list[int]) -> dict[int, tuple]:
        """Zero-shot labels of the batch images at ``positions`` (encoder only); by position."""
        grid, _ = cap.encode(images[positions])
        return dict(zip(positions, cap.labels_from_grid(grid)))

    def _write_labels(self, items: list[WorkItem], found: list[tuple]) -> None:
        """Labels for photos described before the label signal existed (one transaction)."""
        with self.store.write() as s:
            docs = [writes.write_labels(s, w.photo_id, self._labels(*f)) for w, f in zip(items, found)]
            bm25.upsert_documents(s, docs)
            bump_revision(s)
        self.touched.update(w.photo_id for w in items)
        self.report.labelled += len(items)

    @staticmethod
    def _labels(packed: bytes, vec, region, visual=None) -> writes.Labels:
        """A photo's labels (model/labels.py) and visual vector (model/visual.py) as the store writes them."""
        return writes.Labels(packed, pack_vector(vec), list(region), LABELS_VERSION, pack_vector(visual))

    def _describe(self, cap, images, positions: list[int]) -> dict[int, writes.Description]:
        """Caption the batch images at ``positions`` and embed what was said; by position."""
        if not positions:
            return {}
        import torch

        from imgsearch.text.caption_vectors import caption_vectors

        sel = torch.tensor(positions, dtype=torch.long)
        descs = cap.describe(images.index_select(0, sel), beam=self.beam, n_best=self.n_best)
        emb = caption_vectors(self.get_embedder(), [[c for c, _ in d.captions] for d in descs],
                              [[t for t, _ in d.tags] for d in descs])
        return {pos: writes.Description(
            list(d.captions), list(d.tags), list(d.keywords), pack_vector(emb[k]),
            pack_vector(d.image_embedding) if getattr(d, "image_embedding", None) is not None else None,
            getattr(d, "cells", None),
            self._labels(d.labels, d.label_embedding, d.region_tags, getattr(d, "visual_embedding", None))
            if getattr(d, "labels", None) is not None else None,
        ) for k, (pos, d) in enumerate(zip(positions, descs))}

    def _count(self, w: WorkItem) -> None:
        if w.reason == "new":
            self.report.added += 1
        else:
            self.report.updated += 1

    def _fail(self, s, w: WorkItem, reason: str, at) -> None:
        if writes.write_failure(s, w.path, w.photo_id, reason, at, version=self.version):
            self.report.failed += 1
            self.report.errors.append((w.path, reason))
        elif w.photo_id is not None:  # vanished between scan and decode: it is simply gone
            self.report.removed += 1
        if w.photo_id is not None:
            self.touched.add(w.photo_id)

    # ---------------------------------------------------------------- end of run
    def _remove_gone(self) -> None:
        self.report.kept = self.plan.kept_folders(self.claimed)   # what moves did not claim stays kept
        ids = [pid for path, pid in self.plan.gone.items() if pid not in self.claimed and not os.path.exists(path)]
        if not ids:
            return
        with self.store.write() as s:
            writes.remove_photos(s, ids)
            bump_revision(s)
        self.touched.update(ids)
        self.report.removed += len(ids)


def _reason(e: BaseException) -> str:
    """One short line: the exception's type and the first line of its message."""
    lines = str(e).strip().splitlines()
    msg = lines[0][:200] if lines else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def model_name(cap) -> str:
    """How a ModelError names the model: its checkpoint file when known, else its version."""
    path = getattr(cap, "checkpoint_path", None)
    return f"checkpoint {path}" if path else f"model {getattr(cap, 'version', '?')}"


def check_preprocessing(cap, size: int, resize: str) -> None:
    """Prepare a blank picture the way every photo will be (``decode.to_model_input`` with the captioner's
    ``image_size`` and ``resize``): a failure here is the checkpoint's (a bad ``resize`` field), not the
    photos', so it stops the run (ModelError) before anything is recorded against them."""
    from PIL import Image

    from imgsearch.indexer.decode import DecodedPhoto, to_model_input

    blank = DecodedPhoto(Image.new("RGB", (size + size // 2, size), (127, 127, 127)), size + size // 2, size, None)
    try:
        to_model_input(blank, size, resize)
    except Exception as e:  # noqa: BLE001 - whatever the checkpoint's settings make it raise
        raise ModelError(f"{model_name(cap)} cannot prepare photos ({_reason(e)}); nothing was recorded against "
                         "the photos: fix or replace the checkpoint and index again") from None
