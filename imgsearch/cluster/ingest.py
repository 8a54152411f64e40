"""Ingest, on the library's machine: the shards of a Ray run streamed into the library with today's rules.

The roots are planned again (indexer/plan.make_plan, as the run did); each shard row whose photo is still in
the plan's work list, by the run's model version, for the file as it is now (size and mtime_ns unchanged since
it was decoded) is written the way an ordinary index run writes a decoded photo: IndexRunner._do_batch applies
the move / touch / copy / describe rules (indexer/rules.py) and writes one transaction per chunk (store/writes.py),
the description coming from the shard row instead of the captioner. Photos gone from the roots are removed at
the end, as by ``index``.

Idempotent: a photo written is no longer in the plan's work list, so a second ingest, or one after a crash
half-way (whole transactions only), writes exactly what is missing and gives the same library. A photo
described in two attempts is taken from the newest; rows of another model version or of a file that has
changed since are left (``report.not_ingested``: the next run submits them again).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imgsearch.cluster import shards
from imgsearch.cluster.plan import read_run
from imgsearch.indexer.geotag import place_stale
from imgsearch.indexer.plan import make_plan
from imgsearch.indexer.reembed import refresh_caption_embeddings
from imgsearch.indexer.runner import IndexRunner
from imgsearch.store import writes

CHUNK = 2000   # shard rows per transaction


class ShardIngest(IndexRunner):
    """An index run whose decoding and captioning were done by a Ray job (RUN_DIR/shards)."""

    def __init__(self, store, run_dir: str | os.PathLike, *, get_embedder: Callable[[], Any], chunk: int = CHUNK,
                 progress: Callable[[int, int], None] | None = None, bulk: bool = True):
        self.run_dir = Path(run_dir)
        self.run_info = read_run(self.run_dir)
        opts = self.run_info.get("options", {})
        version = self.run_info["model_version"]
        super().__init__(store, self.run_info["roots"], get_captioner=lambda: None, get_version=lambda: version,
                         get_embedder=get_embedder, batch_size=chunk, workers=0, progress=progress,
                         retry_failed=bool(opts.get("retry_failed")), prune_empty=bool(opts.get("prune_empty")),
                         verify=bool(opts.get("verify")))
        self.version = version
        self.not_ingested = 0   # planned photos without a usable shard row: left for the next run
        self.bulk = bulk        # plainly new photos in bulk inserts (_bulk_new); False: all row by row

    def run(self):
        from imgsearch.indexer.scan import RootNotFoundError
        from imgsearch.errors import UserError

        t0 = time.monotonic()
        started = writes.now()
        try:
            self.plan = plan = make_plan(self.store, self.roots_in, get_version=self.get_version,
                                         retry_failed=self.retry_failed, prune_empty=self.prune_empty,
                                         verify=self.verify)
        except RootNotFoundError as e:
            raise UserError(f"no such folder or file: {e.filename} (a root of the Ray run in {self.run_dir})") from None
        self.report.skipped_unchanged += plan.skipped_unchanged
        with self.store.write() as s:
            run_id = writes.start_run(s, started, plan.roots)
        self.touched.update(refresh_caption_embeddings(self.store, self.get_embedder))
        self.report.errors.extend(plan.errors)
        pending = {w.path: i for i, w in enumerate(plan.work) if w.reason != "ocr"}
        total, done = len(pending), 0
        if self.progress:
            self.progress(0, total)
        for rows in shards.iter_rows(self.run_dir, self.batch_size):
            take = []
            for r in rows:
                i = pending.get(r["path"])
                if i is not None and r["model_version"] == self.version and _fresh(r):
                    take.append((i, r))
                    del pending[r["path"]]
            if take:
                self._ingest(sorted(take, key=lambda t: t[0]))
                done += len(take)
                if self.progress:
                    self.progress(done, total)
        self.not_ingested = len(pending)
        self.touched.update(place_stale(self.store, plan, self.report))
        self._remove_gone()
        self.report.seconds = time.monotonic() - t0
        with self.store.write() as s:
            writes.finish_run(s, run_id, self.report, self.version)
        return self.report

    def _ingest(self, take: list[tuple[int, dict]]) -> None:
        if self.bulk:
            take = self._bulk_new(take)
        if not take:
            return
        ok = [(i, r) for i, r in take if r["error"] is None]
        failed = [(i, {"error": r["error"]}) for i, r in take if r["error"] is not None]
        images = None
        if ok:
            images = np.empty(len(ok), dtype=object)   # the shard rows stand for the decoded images
            images[:] = [r for _, r in ok]
        self._do_batch(None, [i for i, _ in ok], images, [json.loads(r["info"]) for _, r in ok], failed)

    def _bulk_new(self, take: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
        """Write the plainly new photos of a chunk in one transaction of bulk inserts; returns the others (for
        _do_batch, row by row). Plainly new: a new path (no row), described, whose content no stored photo and no
        other row of the chunk has — the rules (indexer/rules.decide) can only say "describe" for it, and the
        rows written are those of upsert_photo + write_description (store/writes.py), ~20x fewer statements."""
        from sqlalchemy import select

        from imgsearch.indexer.reembed import META_KEY, embedding_version
        from imgsearch.search import bm25
        from imgsearch.store.db import bump_revision, set_meta
        from imgsearch.store.models import Caption, Photo, PhotoCells, Tag
        from imgsearch.store.queries import photos_by_hash

        cand = [(i, r, json.loads(r["info"])) for i, r in take
                if r["error"] is None and self.plan.work[i].reason == "new" and self.plan.work[i].photo_id is None]
        counts: dict[str, int] = {}
        for _, _, info in cand:
            counts[info["content_hash"]] = counts.get(info["content_hash"], 0) + 1
        with self.store.session() as s:
            stored = photos_by_hash(s, sorted(counts))
        fast = [(i, r, info) for i, r, info in cand if counts[info["content_hash"]] == 1 and not stored.get(info["content_hash"])]
        if not fast:
            return take
        writes.resolve_places([info for _, _, info in fast])     # the gazetteer loads before the write lock
        at = writes.now()
        descs = [shards.description(r) for _, r, _ in fast]
        photo_rows = []
        for (i, r, info), d in zip(fast, descs):
            path = self.plan.work[i].path
            photo_rows.append({"path": path, "folder": os.path.dirname(path), "indexed_at": at,
                               **writes.stat_values(info), "caption": d.captions[0][0] if d.captions else "",
                               "model_version": self.version, "error": None, "caption_embedding": d.caption_embedding,
                               "image_embedding": d.image_embedding,
                               **(d.labels.columns() if d.labels is not None else writes.NO_LABELS),
                               "ocr_text": None, "ocr_version": None})
        with self.store.write() as s:
            s.execute(Photo.__table__.insert(), photo_rows)     # Core executemany: no ORM bookkeeping
            paths = [p["path"] for p in photo_rows]
            ids: dict[str, int] = {}
            for k in range(0, len(paths), 900):
                ids.update(s.execute(select(Photo.path, Photo.id).where(Photo.path.in_(paths[k:k + 900]))).all())
            caps, tags, cells, docs = [], [], [], []
            for row, d in zip(photo_rows, descs):
                pid = ids[row["path"]]
                captions, terms = writes.description_rows(d)
                caps += [{"photo_id": pid, "rank": rk, "text": t, "score": sc} for rk, t, sc in captions]
                tags += [{"photo_id": pid, "kind": k, "term": t, "score": sc} for k, t, sc in terms]
                if d.cells is not None:
                    cells.append({"photo_id": pid, "data": d.cells})
                docs.append(writes._document(pid, captions, terms, row.get("place")))
            for model, values in ((Caption, caps), (Tag, tags), (PhotoCells, cells)):
                if values:
                    s.execute(model.__table__.insert(), values)
            bm25.upsert_documents(s, docs)
            if not self.embedder_recorded:
                set_meta(s, META_KEY, embedding_version(self.get_embedder()))
                self.embedder_recorded = True
            bump_revision(s)
        self.touched.update(ids.values())
        self.report.added += len(fast)
        done = {i for i, _, _ in fast}
        return [(i, r) for i, r in take if i not in done]

    # the model's two steps, answered from the shard rows
    def _describe(self, cap, images, positions: list[int]) -> dict[int, writes.Description]:
        return {pos: shards.description(images[pos]) for pos in positions}

    def _find_labels(self, cap, images, positions: list[int]) -> dict[int, tuple]:
        out = {}
        for pos in positions:
            lab = shards.labels_tuple(images[pos])
            if lab is None:
                raise ValueError("the shard row holds no labels")
            out[pos] = lab
        return out


def _fresh(row: dict) -> bool:
    """The file is as it was when the row was made (its size and mtime_ns then: at decode, else at planning)."""
    info = json.loads(row["info"]) if row.get("info") else {}
    size, mtime = info.get("size", row["size"]), info.get("mtime_ns", row["mtime_ns"])
    try:
        st = os.stat(row["path"])
    except OSError:
        return row["error"] is not None   # gone: a failure row is still written (write_failure sees it gone)
    return st.st_size == size and st.st_mtime_ns == mtime
