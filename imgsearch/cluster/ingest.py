"""Ingest, on the library's machine: the shards of a Ray run streamed into the library with today's rules.

The roots are planned again (indexer/plan.make_plan, as the run did); each shard row whose photo is still in
the plan's work list, by the run's model version, for the file as it is now (size and mtime_ns unchanged since
it was decoded) is written the way an ordinary index run writes a decoded photo: IndexRunner._do_batch applies
the move / touch / copy / describe rules (indexer/rules.py) and writes one transaction per chunk (store/writes.py),
the description coming from the shard row instead of the captioner. Photos gone from the roots are removed at
the end, as by ``index``. The plainly new photos of a chunk (a new path, described, a content no other photo
has: the rules can only say "describe") skip the rules: their rows are made from the Arrow columns in bulk
(bulk_rows) and inserted by one executemany a table (_BulkWriter). Three threads besides this one: one reads
(decodes) the shards ahead, one runs each bulk transaction's COMMIT while the next chunk's rows are made, one
copies the WAL back into the database file (_Checkpointer); the Python work stays on this thread (see run()).

Idempotent: a photo written is no longer in the plan's work list, so a second ingest, or one after a crash
half-way (whole transactions only), writes exactly what is missing and gives the same library. A photo
described in two attempts is taken from the newest; rows of another model version or of a file that has
changed since are left (``report.not_ingested``: the next run submits them again).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from imgsearch.cluster import shards
from imgsearch.cluster.plan import read_run
from imgsearch.indexer.geotag import place_stale
from imgsearch.indexer.plan import make_plan
from imgsearch.indexer.reembed import refresh_caption_embeddings
from imgsearch.indexer.runner import IndexRunner
from imgsearch.store import writes

log = logging.getLogger(__name__)

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
        self.phases: dict[str, float] = {}   # seconds: plan_s (plan + start), writes_s (shards → library)
        self._writer: _BulkWriter | None = None   # the bulk transactions' connection, commits, checkpoints

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
        t_write = time.monotonic()
        self._writer = _BulkWriter(self.store) if self.bulk else None
        try:
            # a thread reads (decodes) the shards ahead; the rows are made here, between the transactions: made
            # on that thread too, their Python work would hold the GIL that each row of an executemany takes
            # back after its SQLite step, and the inserts ran twice as slow (measured: bench/README.md)
            for batch, take, prep in self._staged(_prefetched(shards.iter_batches(self.run_dir, self.batch_size)),
                                                  pending):
                if take:
                    self._ingest(batch, take, prep)
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
        self.touched.update(place_stale(self.store, plan, self.report))
        self._remove_gone()
        self.report.seconds = time.monotonic() - t0
        with self.store.write() as s:
            writes.finish_run(s, run_id, self.report, self.version)
        return self.report

    def _take(self, batch, pending: dict[str, int]) -> list[tuple[int, int, dict, str | None]]:
        """The rows of ``batch`` to write, as (plan index, row in the batch, decode info, error), in plan order:
        those whose photo is still in the plan's work list (``pending``: taken out here), by the run's model
        version, for the file as it is now."""
        cols = {n: batch.column(n).to_pylist() for n in ("path", "model_version", "error", "info", "size", "mtime_ns")}
        take = []
        for j, (path, version, error, info) in enumerate(zip(cols["path"], cols["model_version"], cols["error"],
                                                               cols["info"])):
            i = pending.get(path)
            if i is None or version != self.version:
                continue
            info = json.loads(info) if info else {}
            if _fresh(path, info, cols["size"][j], cols["mtime_ns"][j], error is not None):
                take.append((i, j, info, error))
                del pending[path]
        take.sort(key=lambda t: t[0])
        return take

    def _staged(self, batches, pending: dict[str, int]):
        """(batch, rows to take, rows made for the bulk inserts or None) for each batch (see _take, _prepare)."""
        for batch in batches:
            take = self._take(batch, pending)
            yield batch, take, (self._prepare(batch, take) if self.bulk and take else None)

    def _prepare(self, batch, take: list[tuple[int, int, dict, str | None]]):
        """(candidates, their BulkRows) for the rows of ``take`` that may be plainly new (see _plainly_new: new
        path, no row, described), or None; made from the batch alone, without the library (while the previous
        chunk's COMMIT runs: _BulkWriter)."""
        work = self.plan.work
        cand = [t for t in take if t[3] is None and work[t[0]].reason == "new" and work[t[0]].photo_id is None]
        if not cand:
            return None
        infos = [info for _, _, info, _ in cand]
        writes.resolve_places(infos)     # the gazetteer loads before the write lock
        return cand, bulk_rows(batch, [work[i].path for i, _, _, _ in cand], infos, self.version, writes.now(),
                               self.store.engine.dialect, [j for _, j, _, _ in cand])

    def _ingest(self, batch, take: list[tuple[int, int, dict, str | None]], prep=None) -> None:
        """Write the rows of ``take``: the plainly new photos by bulk inserts (_bulk_write, one transaction), then
        the others through the rules (_by_rules, one transaction). The previous chunk's commit is waited for
        first: the checks below read what it wrote."""
        if self._writer is not None:
            self._writer.wait()
        if prep is not None:
            cand, rows = prep
            fast = self._plainly_new(cand)
            if fast:
                keep = [k for k, t in enumerate(cand) if t[0] in fast]
                self._bulk_write(rows if len(keep) == len(cand) else rows.subset(keep))
                take = [t for t in take if t[0] not in fast]
        if take:
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
        from imgsearch.store.queries import photos_by_hash

        counts: dict[str, int] = {}
        for _, _, info, _ in cand:
            counts[info["content_hash"]] = counts.get(info["content_hash"], 0) + 1
        with self.store.session() as s:
            stored = photos_by_hash(s, sorted(counts))
        return {t[0] for t in cand if counts[t[2]["content_hash"]] == 1 and not stored.get(t[2]["content_hash"])}

    def _bulk_write(self, r: "BulkRows") -> None:
        """Plainly new photos in one transaction of bulk inserts: the rows made from the batch's columns
        (bulk_rows), written by the DB-API cursor's executemany, one statement per table, the ids given here
        (AUTOINCREMENT continued: the ids the ORM would give), on the bulk writer's connection (_BulkWriter:
        a larger page cache; the COMMIT runs on its thread while the next chunk's rows are made here)."""
        from imgsearch.indexer.reembed import META_KEY, embedding_version
        from imgsearch.store.db import bump_revision, set_meta

        n, w = len(r.photos), self._writer
        tx = w.begin()   # BEGIN IMMEDIATE, once the previous commit is done
        try:
            base = self._bulk_insert(w.cursor, r)
            if not self.embedder_recorded:
                set_meta(w.conn, META_KEY, embedding_version(self.get_embedder()))
            bump_revision(w.conn)
        except BaseException:
            tx.rollback()
            raise

        def committed() -> None:   # called by w.wait(), here, once the COMMIT has returned
            self.embedder_recorded = True
            self.touched.update(range(base + 1, base + n + 1))
            self.report.added += n

        w.commit(tx, committed)

    @staticmethod
    def _bulk_insert(cur, r: "BulkRows") -> int:
        """The executemany of each table, inside the caller's transaction; returns the base id."""
        from imgsearch.search import bm25

        base = int(cur.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'photos'), "
                               "0), coalesce((SELECT max(id) FROM photos), 0))").fetchone()[0])
        cur.executemany(f"INSERT INTO photos ({', '.join(PHOTO_COLUMNS)}) VALUES "
                        f"(? + {base}{', ?' * (len(PHOTO_COLUMNS) - 1)})", r.photos)
        cur.executemany(f"INSERT INTO captions (photo_id, rank, text, score) VALUES (? + {base}, ?, ?, ?)", r.captions)
        cur.executemany(f"INSERT INTO tags (photo_id, kind, term, score) VALUES (? + {base}, ?, ?, ?)", r.tags)
        cur.executemany(f"INSERT INTO photo_cells (photo_id, data) VALUES (? + {base}, ?)", r.cells)
        # new ids (AUTOINCREMENT never reuses one): no document to replace, only to insert
        cur.executemany(f"INSERT INTO {bm25.TABLE}(rowid, terms) VALUES (? + {base}, ?)", r.documents)
        return base

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


def _fresh(path: str, info: dict, size: int, mtime_ns: int, failed: bool) -> bool:
    """The file is as it was when the row was made (its size and mtime_ns then: at decode, else at planning)."""
    size, mtime = info.get("size", size), info.get("mtime_ns", mtime_ns)
    try:
        st = os.stat(path)
    except OSError:
        return failed   # gone: a failure row is still written (write_failure sees it gone)
    return st.st_size == size and st.st_mtime_ns == mtime


# ---------------------------------------------------------------------------- bulk rows of new photos

PHOTO_COLUMNS = ("id", "path", "folder", "size", "mtime_ns", "content_hash", "width", "height", "taken_at", "caption",
                 "model_version", "error", "indexed_at", "caption_embedding", "image_embedding", "labels",
                 "label_embedding", "labels_version", "visual_embedding", "gps_lat", "gps_lon", "place",
                 "places_version", "ocr_text", "ocr_version")


BULK_CACHE_KIB = -131072   # PRAGMA cache_size of a bulk transaction (128 MiB: its index pages stay in memory)


@dataclass
class BulkRows:
    """The rows of new photos for executemany, photo ids relative (1..n: the insert adds the base id)."""

    photos: list[tuple]
    captions: list[tuple]
    tags: list[tuple]
    cells: list[tuple]
    documents: list[tuple]

    def subset(self, keep: list[int]) -> "BulkRows":
        """The rows of the photos at positions ``keep`` (0-based, in order), renumbered 1..len(keep)."""
        new = {k + 1: n + 1 for n, k in enumerate(keep)}

        def pick(rows):
            return [(new[r[0]], *r[1:]) for r in rows if r[0] in new]

        return BulkRows(pick(self.photos), pick(self.captions), pick(self.tags), pick(self.cells), pick(self.documents))


def bulk_rows(batch, paths: list[str], infos: list[dict], version: str, at, dialect,
              rows: Sequence[int] | None = None) -> BulkRows:
    """The rows upsert_photo + write_description (store/writes.py) would write for described shard rows of new
    photos, made from the batch's columns (shards.flat_lists / vector_bytes) instead of one Description each;
    dates through SQLAlchemy's own DateTime processor so they are stored as the ORM stores them. ``rows``: the
    batch row of each photo (default: every row, in order; read in place, not copied out by a take)."""
    from imgsearch.model.labels import LABELS_VERSION
    from imgsearch.search.bm25 import document_terms
    from imgsearch.store.models import Photo

    date = Photo.__table__.c.indexed_at.type.bind_processor(dialect) or (lambda v: v)
    col = batch.column
    cap_off, (cap_text, cap_score) = shards.flat_lists(col("captions"))
    tag_off, (tag_text, tag_score) = shards.flat_lists(col("tags"))
    kw_off, kws = shards.flat_lists(col("keywords"))
    reg_off, (reg_text, reg_score) = shards.flat_lists(col("region_tags"))
    cap_off, tag_off, kw_off, reg_off = cap_off.tolist(), tag_off.tolist(), kw_off.tolist(), reg_off.tolist()
    cap_vec, img_vec, lab_vec, vis_vec = (shards.vector_bytes(col(k)) for k in
                                          ("caption_embedding", "image_embedding", "label_embedding",
                                           "visual_embedding"))
    cells, labels = col("cells").to_pylist(), col("labels").to_pylist()
    labels_version = col("labels_version").to_pylist()
    at_s = date(at)
    no_place = (None, None, None, None)
    dirname, stat_values, term_rows, document = os.path.dirname, writes.stat_values, writes.term_rows, writes._document
    out = BulkRows([], [], [], [], [])
    photos, out_captions, out_tags, out_cells, documents = out.photos, out.captions, out.tags, out.cells, out.documents
    for pid, (k, path, info) in enumerate(zip(range(len(paths)) if rows is None else rows, paths, infos), 1):
        a, b = cap_off[k], cap_off[k + 1]
        captions = list(zip(range(b - a), cap_text[a:b], map(float, cap_score[a:b])))
        has_labels = labels[k] is not None
        region = (list(zip(reg_text[reg_off[k]:reg_off[k + 1]], reg_score[reg_off[k]:reg_off[k + 1]]))
                  if has_labels else ())
        terms = term_rows(zip(tag_text[tag_off[k]:tag_off[k + 1]], tag_score[tag_off[k]:tag_off[k + 1]]),
                          kws[kw_off[k]:kw_off[k + 1]], region)
        st = stat_values(info)
        place = st.get("place")
        pl = (st["gps_lat"], st["gps_lon"], place, st["places_version"]) if "places_version" in st else no_place
        taken = st["taken_at"]
        photos.append((
            pid, path, dirname(path), st["size"], st["mtime_ns"], st["content_hash"], st["width"],
            st["height"], date(taken) if taken is not None else None,
            captions[0][1] if captions else "", version, None, at_s, cap_vec[k], img_vec[k],
            labels[k] if has_labels else None, lab_vec[k] if has_labels else None,
            (labels_version[k] or LABELS_VERSION) if has_labels else None,
            vis_vec[k] if has_labels else None, *pl, None, None))
        out_captions.extend([(pid, rk, t, sc) for rk, t, sc in captions])
        out_tags.extend([(pid, kd, t, sc) for kd, t, sc in terms])
        if cells[k] is not None:
            out_cells.append((pid, cells[k]))
        documents.append((pid, document_terms(document(pid, captions, terms, place)[1])))
    return out


WAL_RESTART_FRAMES = 65536   # WAL pages (4 KiB) past which a bulk transaction waits for the checkpointer first


class _BulkWriter:
    """The connection the bulk transactions are written on (one, held for the ingest, with a larger page cache
    and ``wal_autocheckpoint = 0``), a thread that runs their COMMIT, and the _Checkpointer. A COMMIT writes the
    transaction's pages into the WAL (~60 MB for 2,000 rows): one SQLite call that releases the GIL, so the next
    chunk's rows are made meanwhile. begin() waits for the previous commit; whole transactions only, as before:
    an interrupted ingest leaves the commits that returned (and the one under way, if it completes)."""

    def __init__(self, store):
        from concurrent.futures import ThreadPoolExecutor

        self.conn = store.engine.connect().execution_options(sqlite_immediate=True)
        try:
            self.cursor = cur = self.conn.connection.driver_connection.cursor()
            self._saved = (cur.execute("PRAGMA cache_size").fetchone()[0],
                           cur.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            cur.execute(f"PRAGMA cache_size = {BULK_CACHE_KIB}")
            cur.execute("PRAGMA wal_autocheckpoint = 0")   # the checkpointer copies the WAL back
            self.checkpointer = _Checkpointer(store)
        except BaseException:
            self.conn.close()
            raise
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bulk-commit")
        self._pending = None   # (future of the COMMIT, called once it has returned)

    def begin(self):
        """A new transaction (BEGIN IMMEDIATE) once the previous one is committed; the WAL copied back first
        when it has grown past WAL_RESTART_FRAMES (this transaction then writes it from its start)."""
        self.wait()
        if self.checkpointer.wal_frames > WAL_RESTART_FRAMES:
            self.checkpointer.settle()
        return self.conn.begin()

    def commit(self, tx, committed: Callable[[], None]) -> None:
        """COMMIT ``tx`` on the commit thread; ``committed`` is called by the next wait() once it has returned."""
        def run():
            tx.commit()
            self.checkpointer.kick()

        self._pending = (self._pool.submit(run), committed)

    def wait(self) -> None:
        """Wait for the commit under way, if any (its error raised here)."""
        if self._pending is None:
            return
        future, committed = self._pending
        try:
            future.result()
        except BaseException:
            if not future.done():
                raise               # interrupted while it runs: close() waits for it again
            self._pending = None
            if future.exception() is None:
                committed()         # it did commit (the interruption came as it returned)
            raise
        self._pending = None
        committed()

    def close(self) -> None:
        """The commit under way waited for, the connection's settings restored and back in the pool, the WAL
        copied back."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            try:
                self.cursor.execute(f"PRAGMA cache_size = {int(self._saved[0])}")
                self.cursor.execute(f"PRAGMA wal_autocheckpoint = {int(self._saved[1])}")
                self.cursor.close()
            finally:
                self.conn.close()
                self.checkpointer.close()


class _Checkpointer:
    """Copies the WAL back into the database file (``PRAGMA wal_checkpoint(PASSIVE)``) on a thread and a
    connection of its own, after each bulk transaction (kick), while the next one is written: the bulk
    transactions commit with ``wal_autocheckpoint = 0`` so their commit only appends to the WAL, and the copy
    and its two fsyncs (synchronous=NORMAL: the WAL before, the database after) overlap the inserts instead of
    stalling them. Nothing about durability changes: a commit is in the WAL as before, a checkpoint is
    SQLite's own (a crash during it is recovered from the WAL), and a reader still sees whole transactions.

    SQLite writes the WAL from its start again only when a transaction begins with the whole WAL copied back;
    the writer calls settle() before its next transaction once the WAL holds more than WAL_RESTART_FRAMES pages
    (wal_frames: its length at the last checkpoint), so it stays a few transactions long."""

    def __init__(self, store):
        raw = store.engine.raw_connection()
        raw.detach()                      # out of the pool: this thread's alone, closed by close()
        self._conn = raw
        self._cond = threading.Condition()
        self._asked = self._done = 0
        self._closing = False
        self.wal_frames = 0               # pages in the WAL at the last checkpoint
        self._thread = threading.Thread(target=self._loop, name="wal-checkpointer", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """A transaction was committed: copy it back."""
        with self._cond:
            self._asked += 1
            self._cond.notify_all()

    def settle(self) -> None:
        """Wait until every checkpoint asked for so far is done (the next transaction then writes the WAL from
        its start: counted from 0 again)."""
        with self._cond:
            while self._done < self._asked and self._thread.is_alive():
                self._cond.wait(0.5)
            self.wal_frames = 0

    def close(self) -> None:
        """A last checkpoint, then the thread and its connection end."""
        self.kick()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._conn.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._done == self._asked and not self._closing:
                    self._cond.wait()
                if self._done == self._asked:
                    return
                asked = self._asked
            try:
                row = self._conn.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.wal_frames = int(row[1]) if row and row[0] == 0 else self.wal_frames
            except Exception as e:  # noqa: BLE001 - a checkpoint not done now is done by the next one (or SQLite's own)
                log.debug("WAL checkpoint: %s", e)
            with self._cond:
                self._done = asked
                self._cond.notify_all()


def _prefetched(it: Iterator, depth: int = 2) -> Iterator:
    """``it`` read ahead on a thread (Parquet decoding releases the GIL: it overlaps the SQLite writes); an
    exception of ``it`` is raised here, and the thread stops when the consumer does."""
    q: queue.Queue = queue.Queue(depth)
    closed = threading.Event()
    end = object()

    def put(item) -> bool:
        while not closed.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for x in it:
                if not put((x, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((end, e))

    t = threading.Thread(target=produce, name="shard-reader", daemon=True)
    t.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        closed.set()
