"""Ingest, on the library's machine: the shards of a Ray run streamed into the library with today's rules.

The roots are planned again (indexer/plan.make_plan, as the run did); each shard row whose photo is still in
the plan's work list, by the run's model version, for the file as it is now (size and mtime_ns unchanged since
it was decoded) is written the way an ordinary index run writes a decoded photo: IndexRunner._do_batch applies
the move / touch / copy / describe rules (indexer/rules.py) and writes one transaction per chunk (store/writes.py),
the description coming from the shard row instead of the captioner. Photos gone from the roots are removed at
the end, as by ``index``. The plainly new photos of a chunk (a new path, described, a content no other photo
has: the rules can only say "describe") skip the rules: their rows are made from the Arrow columns in bulk
(cluster/bulk.py: bulk_rows) and inserted by one executemany a table (BulkWriter: through a rollback journal
where the library can be had alone, store/journal.py). Threads besides this one: one reads (decodes) the shards
ahead, one runs each bulk transaction's COMMIT while the next chunk's rows are made, and in WAL mode one copies
the WAL back into the database file (Checkpointer); the Python work stays on this thread (see run()).
Into an empty library, another trains the IVF cells of the FAISS files on a sample of the shards from the start
(the plan included), at a lower priority, and then fills them with each bulk transaction's vectors once it is
committed, read again from the shards (search/early_training.py, cluster/early_fill.py: early_indexes()).

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
from typing import Any, Callable, Iterator

import numpy as np

from imgsearch.cluster import shards
from imgsearch.cluster.bulk import BulkRows, BulkWriter, bulk_rows
from imgsearch.cluster.plan import read_run
from imgsearch.indexer.geotag import place_stale
from imgsearch.indexer.plan import make_plan
from imgsearch.indexer.reembed import refresh_caption_embeddings
from imgsearch.indexer.runner import IndexRunner
from imgsearch.readahead import read_ahead
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
        self.bulk = bulk        # plainly new photos in bulk inserts (_bulk_write); False: all row by row
        self.phases: dict[str, float] = {}   # seconds: plan_s (plan + start), writes_s (shards → library), finish_s
        self._writer: BulkWriter | None = None   # the bulk transactions' connection, commits, checkpoints
        self._early = None   # search/early_training.EarlyTraining: IVF indexes trained and filled during the run
        self._bulk_ids: list[range] = []   # the photo ids the bulk transactions wrote (self.touched: the others)

    def run(self):
        from imgsearch.indexer.scan import RootNotFoundError
        from imgsearch.errors import UserError

        t0 = time.monotonic()
        started = writes.now()
        # the IVF cells trained from the start, guessed from the shards' row count: the plan (one thread, a scan of
        # the roots) leaves the second core idle for its k-means
        self._early = self._start_early_training(shards.row_count(self.run_dir))
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
        if not total:
            self.cancel_training()
        if self.progress:
            self.progress(0, total)
        t_write = time.monotonic()
        self._writer = BulkWriter(self.store) if self.bulk else None
        try:
            # a thread reads (decodes) the shards ahead; the rows are made here, between the transactions: made
            # on that thread too, their Python work would hold the GIL that each row of an executemany takes
            # back after its SQLite step, and the inserts ran twice as slow (measured: bench/README.md)
            # the files' stat is taken on that thread too: a system call each, outside the GIL while the inserts
            # run here (at 1M rows, ~6 s of the main thread's time otherwise)
            batches = shards.iter_batches(self.run_dir, self.batch_size)
            ahead = read_ahead(_with_stats(batches, pending), name="shard-reader")
            for k, batch, take, prep in self._staged(ahead, pending):
                if take:
                    self._ingest(k, batch, take, prep)
                    done += len(take)
                    if self.progress:
                        self.progress(done, total)
        finally:   # the last commit waited for (and its photos counted), the checkpointer stopped
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
        self.phases["plan_s"] = t_write - t0
        self.phases["writes_s"] = time.monotonic() - t_write
        self.not_ingested = len(pending)
        t_end = time.monotonic()
        self.touched.update(place_stale(self.store, plan, self.report))
        self._remove_gone()
        self.report.seconds = time.monotonic() - t0
        with self.store.write() as s:
            writes.finish_run(s, run_id, self.report, self.version)
        self.phases["finish_s"] = time.monotonic() - t_end   # places, gone photos, the run's record
        return self.report

    def _start_early_training(self, n_new: int):
        """The IVF cells trained on a sample of the shards while the roots are planned and the rows written, then
        filled with the bulk transactions' vectors (EarlyTraining, cluster/early_fill.ShardVectors), where this
        ingest fills an empty library with enough photos (``n_new``: the shards' rows, a guess: a trained index
        whose cell count the final count does not call for is not used) for IVF indexes; else None."""
        if not self.bulk or not n_new:
            return None
        from sqlalchemy import text

        from imgsearch.cluster.early_fill import ShardVectors
        from imgsearch.search.early_training import EarlyTraining
        from imgsearch.store.vectors import KINDS

        with self.store.session() as s:
            if s.execute(text("SELECT EXISTS (SELECT 1 FROM photos)")).scalar():
                return None   # a sample of the shards would not be one of the library
        return EarlyTraining.start(n_new, lambda need: shards.sample_vectors(self.run_dir, need, self.version), KINDS,
                                   ShardVectors(self.run_dir, self.batch_size))

    def changed(self) -> set[int]:
        """The photo ids whose vectors may have changed (or rows gone): for the search caches' update."""
        out = set(self.touched)
        for ids in self._bulk_ids:
            out.update(ids)
        return out

    def early_indexes(self):
        """The EarlyTraining of this run (search/early_training.py), told that the writes are done (its fill
        ends with the last committed transaction; the photos written otherwise are its ``patch``), not waited
        for: SearchCaches.update waits for it beside the BM25 build; None if none."""
        early, self._early = self._early, None
        if early is not None:
            early.finish(patch=self.touched)
        return early

    def cancel_training(self) -> None:
        """The early training stopped (after its current kind), its result unused: after a failed ingest."""
        early, self._early = self._early, None
        if early is not None:
            early.cancel()

    def _take(self, batch, stats: list, pending: dict[str, int]) -> list[tuple[int, int, dict, str | None]]:
        """The rows of ``batch`` to write, as (plan index, row in the batch, decode info, error), in plan order:
        those whose photo is still in the plan's work list (``pending``: taken out here), by the run's model
        version, for the file as it is now (``stats``: each row's file stat, taken as the batch was read)."""
        cols = {n: batch.column(n).to_pylist() for n in ("path", "model_version", "error", "info", "size", "mtime_ns")}
        paths, versions, raw = cols["path"], cols["model_version"], cols["info"]
        rows = [j for j, (path, version) in enumerate(zip(paths, versions))
                if version == self.version and path in pending]
        infos = _decode_infos([raw[j] for j in rows])
        take = []
        for j, info in zip(rows, infos):
            path, error = paths[j], cols["error"][j]
            i = pending.get(path)
            if i is None:   # the same path twice in the batch: the first row is taken
                continue
            if _fresh(stats[j], info, cols["size"][j], cols["mtime_ns"][j], error is not None):
                take.append((i, j, info, error))
                del pending[path]
        take.sort(key=lambda t: t[0])
        return take

    def _staged(self, batches, pending: dict[str, int]):
        """(its number, batch, rows to take, rows made for the bulk inserts or None) for each batch (see _take,
        _prepare)."""
        for k, (batch, stats) in enumerate(batches):
            take = self._take(batch, stats, pending)
            yield k, batch, take, (self._prepare(batch, take) if self.bulk and take else None)

    def _prepare(self, batch, take: list[tuple[int, int, dict, str | None]]):
        """(candidates, their BulkRows) for the rows of ``take`` that may be plainly new (see _plainly_new: new
        path, no row, described), or None; made from the batch alone, without the library (while the previous
        chunk's COMMIT runs: BulkWriter)."""
        work = self.plan.work
        cand = [t for t in take if t[3] is None and work[t[0]].reason == "new" and work[t[0]].photo_id is None]
        if not cand:
            return None
        infos = [info for _, _, info, _ in cand]
        writes.resolve_places(infos)     # the gazetteer loads before the write lock
        return cand, bulk_rows(batch, [work[i].path for i, _, _, _ in cand], infos, self.version, writes.now(),
                               self.store.engine.dialect, [j for _, j, _, _ in cand])

    def _ingest(self, k: int, batch, take: list[tuple[int, int, dict, str | None]], prep=None) -> None:
        """Write the rows of ``take`` (of the ``k``-th batch): the plainly new photos by bulk inserts (_bulk_write,
        one transaction), then the others through the rules (_by_rules, one transaction). The previous chunk's
        commit is waited for first: the checks below read what it wrote."""
        if self._writer is not None:
            self._writer.wait()
        if prep is not None:
            cand, rows = prep
            fast = self._plainly_new(cand)
            if fast:
                keep = [j for j, t in enumerate(cand) if t[0] in fast]
                self._bulk_write(rows if len(keep) == len(cand) else rows.subset(keep), k)
                take = [t for t in take if t[0] not in fast]
        if take:
            if self._writer is not None:   # the rules read and write once the bulk COMMIT is done (with a rollback
                self._writer.wait()        # journal, a read of theirs would hold that COMMIT up: store/journal.py)
            self._by_rules(batch, take)

    def _by_rules(self, batch, take: list[tuple[int, int, dict, str | None]]) -> None:
        """Rows through IndexRunner._do_batch: the move / touch / copy / describe rules, one transaction."""
        import pyarrow as pa

        rows = shards.rows_of(batch.take(pa.array([j for _, j, _, _ in take], type=pa.int64())))
        ok = [(i, r, info) for (i, _, info, err), r in zip(take, rows) if err is None]
        failed = [(i, {"error": err}) for i, _, _, err in take if err is not None]
        images = None
        if ok:
            images = np.empty(len(ok), dtype=object)   # the shard rows stand for the decoded images
            images[:] = [r for _, r, _ in ok]
        self._do_batch(None, [i for i, _, _ in ok], images, [info for _, _, info in ok], failed)

    def _plainly_new(self, cand: list) -> set[int]:
        """The plan indexes of the plainly new photos among ``cand`` (made by _prepare: new path, no row,
        described): those whose content no stored photo and no other row of the chunk has. The rules
        (indexer/rules.decide) can only say "describe" for them, and the rows to write are those of upsert_photo
        + write_description (store/writes.py)."""
        from imgsearch.store.queries import hashes_in_use

        counts: dict[str, int] = {}
        for _, _, info, _ in cand:
            counts[info["content_hash"]] = counts.get(info["content_hash"], 0) + 1
        with self.store.session() as s:
            stored = hashes_in_use(s, counts)
        return {t[0] for t in cand if counts[t[2]["content_hash"]] == 1 and t[2]["content_hash"] not in stored}

    def _bulk_write(self, r: "BulkRows", k: int) -> None:
        """Plainly new photos in one transaction of bulk inserts: the rows made from the ``k``-th batch's columns
        (bulk_rows), one statement a table, the ids given by the writer (BulkWriter.insert: AUTOINCREMENT
        continued, the ids the ORM would give), on the bulk writer's connection (a larger page cache, no
        foreign-key lookups; the COMMIT runs on its thread while the next chunk's rows are made here). Once
        committed, the early fill is told which photos of which batch it wrote (cluster/early_fill.FillItem)."""
        from imgsearch.cluster.early_fill import FillItem
        from imgsearch.indexer.reembed import META_KEY, embedding_version
        from imgsearch.store.db import bump_revision, set_meta

        n, w = len(r.photos), self._writer
        tx = w.begin()   # BEGIN IMMEDIATE, once the previous commit is done
        try:
            base = w.insert(r)
            if not self.embedder_recorded:
                set_meta(w.conn, META_KEY, embedding_version(self.get_embedder()))
            bump_revision(w.conn)
        except BaseException:
            tx.rollback()
            raise

        def committed() -> None:   # called by w.wait(), here, once the COMMIT has returned
            self.embedder_recorded = True
            self._bulk_ids.append(range(base + 1, base + n + 1))
            self.report.added += n
            if self._early is not None:
                self._early.fill_later(FillItem(k, np.asarray(r.rows, dtype=np.int32), base, r.paths_key(),
                                                r.vector_counts()))

        w.commit(tx, committed)

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


def _with_stats(batches: Iterator, pending: dict[str, int]) -> Iterator[tuple[object, list[tuple[int, int] | None]]]:
    """(batch, [(size, mtime_ns) of each row's file now, or None: gone]) for each batch; only the rows whose path
    is still in ``pending`` are looked at (the others are never taken: _take skips them first, and a path leaves
    ``pending`` but never enters it, so reading it from this thread is safe)."""
    for batch in batches:
        stats = []
        for path in batch.column("path").to_pylist():
            if path not in pending:
                stats.append(None)
                continue
            try:
                st = os.stat(path)
                stats.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append(None)
        yield batch, stats


def _decode_infos(raw: list[str | None]) -> list[dict]:
    """Each row's decode info (its JSON; {} where empty), decoded as one JSON array: one call instead of one a row
    (2.5× faster at 2,000 rows). Any doubt (a row that does not decode, or not to one object) and each row is
    decoded on its own, as before."""
    if not raw:
        return []
    try:
        got = json.loads("[" + ",".join(r or "{}" for r in raw) + "]")
        if len(got) == len(raw) and all(type(g) is dict for g in got):
            return got
    except ValueError:
        pass
    return [json.loads(r) if r else {} for r in raw]


def _fresh(st: tuple[int, int] | None, info: dict, size: int, mtime_ns: int, failed: bool) -> bool:
    """The file (its stat ``st``, None: gone) is as it was when the row was made (its size and mtime_ns then: at
    decode, else at planning)."""
    if st is None:
        return failed   # gone: a failure row is still written (write_failure sees it gone)
    return st == (info.get("size", size), info.get("mtime_ns", mtime_ns))
