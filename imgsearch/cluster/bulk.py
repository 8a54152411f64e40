"""The bulk path of an ingest: the rows of plainly new photos made from a shard batch's Arrow columns
(``bulk_rows``), and the writer that inserts them (``BulkWriter``: one connection held for the ingest, each COMMIT
on a thread of its own; through a rollback journal where the library can be had alone, store/journal.py, else
through the WAL, copied back by a ``Checkpointer`` thread meanwhile). cluster/ingest.py decides
which rows take this path; bench/README.md ("Ingest rate") has the measurements behind each choice."""
from __future__ import annotations

import logging
import os
import threading

import numpy as np
from dataclasses import dataclass
from typing import Callable, Sequence

from imgsearch.cluster import shards
from imgsearch.store import journal, writes
from imgsearch.store.db import BUSY_TIMEOUT_MS

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- bulk rows of new photos

PHOTO_COLUMNS = ("id", "path", "folder", "size", "mtime_ns", "content_hash", "width", "height", "taken_at", "caption",
                 "model_version", "error", "indexed_at", "caption_embedding", "image_embedding", "labels",
                 "label_embedding", "labels_version", "visual_embedding", "gps_lat", "gps_lon", "place",
                 "places_version", "ocr_text", "ocr_version")


_VECTOR_AT = [PHOTO_COLUMNS.index(c) for c in ("caption_embedding", "image_embedding", "label_embedding",
                                               "visual_embedding")]   # store/vectors.KINDS order

BULK_CACHE_KIB = -131072   # PRAGMA cache_size of a bulk transaction (128 MiB: its index pages stay in memory)


@dataclass
class BulkRows:
    """The rows of new photos for executemany, photo ids relative (1..n: the insert adds the base id)."""

    photos: list[tuple]
    captions: list[tuple]
    terms: list[tuple]      # (photo, its packed tag rows: store/models.pack_terms), photos with terms only
    cells: list[tuple]
    documents: list[tuple]
    rows: list[int]         # each photo's row in the shard batch, in photo order

    def subset(self, keep: list[int]) -> "BulkRows":
        """The rows of the photos at positions ``keep`` (0-based, in order), renumbered 1..len(keep)."""
        new = {k + 1: n + 1 for n, k in enumerate(keep)}

        def pick(rows):
            return [(new[r[0]], *r[1:]) for r in rows if r[0] in new]

        return BulkRows(pick(self.photos), pick(self.captions), pick(self.terms), pick(self.cells), pick(self.documents),
                        [self.rows[k] for k in keep])

    def vector_counts(self) -> tuple[int, ...]:
        """How many vectors of each kind (store/vectors.KINDS order) these rows store (not null)."""
        return tuple(sum(1 for p in self.photos if p[c] is not None) for c in _VECTOR_AT)

    def paths_key(self) -> int:
        """A fingerprint of the photos' paths in order (bulk_vectors' caller checks it against the batch it reads)."""
        return hash(tuple(p[1] for p in self.photos))


def bulk_rows(batch, paths: list[str], infos: list[dict], version: str, at, dialect,
              rows: Sequence[int] | None = None) -> BulkRows:
    """The rows upsert_photo + write_description (store/writes.py) would write for described shard rows of new
    photos, made from the batch's columns (shards.flat_lists / vector_views / binary_views) instead of one
    Description each; dates through SQLAlchemy's own DateTime processor so they are stored as the ORM stores
    them. ``rows``: the batch row of each photo (default: every row, in order; read in place, not copied out by a
    take).

    Column by column where it can be (the captions' rows, the vectors, the photos' tuples zipped from
    columns); the packed terms and the BM25 document as the worker made them (writes.derived_rows) when its rows
    say DERIVED_VERSION and the batch's first such row equals what this code makes of it, else a photo at a time
    here (store/writes.term_rows, document_terms_of); the place's terms appended here (writes.place_terms)."""
    from imgsearch.model.labels import LABELS_VERSION
    from imgsearch.store.models import Photo, pack_terms

    date = Photo.__table__.c.indexed_at.type.bind_processor(dialect) or (lambda v: v)
    col = batch.column
    n = len(paths)
    pos = list(range(n)) if rows is None else [int(k) for k in rows]
    pids = range(1, n + 1)
    cap_off, (cap_text, cap_score) = shards.flat_lists(col("captions"))
    cap_score = [float(v) for v in cap_score]

    def pick(values: list) -> list:
        return values if rows is None else [values[k] for k in pos]

    # the captions: one row per caption of each photo, ranks 0.. in shard order
    k_arr = np.asarray(pos, dtype=np.int64)
    starts, ends = cap_off[k_arr], cap_off[k_arr + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    out_start = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=out_start[1:])
    rank = np.arange(total, dtype=np.int64) - np.repeat(out_start, lengths)
    flat = (np.repeat(starts, lengths) + rank).tolist()
    c_text, c_score = [cap_text[i] for i in flat], [cap_score[i] for i in flat]
    captions = list(zip(np.repeat(np.arange(1, n + 1), lengths).tolist(), rank.tolist(), c_text, c_score))
    first = [cap_text[a] if b > a else "" for a, b in zip(starts.tolist(), ends.tolist())]

    # the vectors and cells as views into the batch's buffers (SQLite copies each once, as it binds it)
    cap_vec, img_vec, lab_vec, vis_vec = (pick(shards.vector_views(col(k))) for k in shards.VECTOR_COLUMNS)
    cells, labels = pick(shards.binary_views(col("cells"))), pick(col("labels").to_pylist())
    labels_version = pick(col("labels_version").to_pylist())
    has_labels = [v is not None for v in labels]   # the label and visual vectors only with labels (LABELLED)
    lab_vec = [v if h else None for v, h in zip(lab_vec, has_labels)]
    vis_vec = [v if h else None for v, h in zip(vis_vec, has_labels)]
    labels_version = [(v or LABELS_VERSION) if h else None for v, h in zip(labels_version, has_labels)]

    # the photos' own columns (what a decode worker's info fills in: writes.stat_values)
    stat_values = writes.stat_values
    sts = [stat_values(info) for info in infos]
    no_place = (None, None, None, None)
    places = [(st["gps_lat"], st["gps_lon"], st.get("place"), st["places_version"]) if "places_version" in st
              else no_place for st in sts]
    at_s = date(at)
    photos = list(zip(
        pids, paths, map(os.path.dirname, paths), [st["size"] for st in sts], [st["mtime_ns"] for st in sts],
        [st["content_hash"] for st in sts], [st["width"] for st in sts], [st["height"] for st in sts],
        [None if st["taken_at"] is None else date(st["taken_at"]) for st in sts], first, [version] * n,
        [None] * n, [at_s] * n, cap_vec, img_vec, labels, lab_vec, labels_version, vis_vec,
        *zip(*places) if n else ([],) * 4, [None] * n, [None] * n))

    # the terms (packed, one row a photo with any) and the BM25 documents: as the worker made them where its
    # row says it made them as this code would (writes.DERIVED_VERSION), else a photo at a time here
    term_rows, document_terms_of, place_terms = writes.term_rows, writes.document_terms_of, writes.place_terms
    cap_off_l = cap_off.tolist()
    lists = None   # the tags', keywords' and region tags' flat lists: read from the batch once a row needs them

    def tag_lists():
        nonlocal lists
        if lists is None:
            tag_off, (tag_text, tag_score) = shards.flat_lists(col("tags"))
            kw_off, kws = shards.flat_lists(col("keywords"))
            reg_off, (reg_text, reg_score) = shards.flat_lists(col("region_tags"))
            lists = (tag_off.tolist(), tag_text, tag_score, kw_off.tolist(), kws, reg_off.tolist(), reg_text,
                     reg_score)
        return lists

    made = [None] * n
    if "derived_version" in batch.schema.names:
        made = [(t, d) if v == writes.DERIVED_VERSION else None for t, d, v in zip(
            pick(col("terms").to_pylist()), pick(col("document").to_pylist()), pick(col("derived_version").to_pylist()))]
    trusted = None   # whether the batch's worker-made rows are this code's (checked on the first of them)
    terms_out, documents = [], []
    for pid, k, h, pl, m in zip(pids, pos, has_labels, places, made):
        if m is not None and trusted:
            packed, doc = m
        else:
            tag_off_l, tag_text, tag_score, kw_off_l, kws, reg_off_l, reg_text, reg_score = tag_lists()
            a, b = tag_off_l[k], tag_off_l[k + 1]
            region = ()
            if h:
                ra, rb = reg_off_l[k], reg_off_l[k + 1]
                region = zip(reg_text[ra:rb], reg_score[ra:rb])
            terms = term_rows(zip(tag_text[a:b], tag_score[a:b]), kws[kw_off_l[k]:kw_off_l[k + 1]], region)
            packed = pack_terms(terms, scores_are_floats=True) if terms else None
            doc = document_terms_of(cap_text[cap_off_l[k]:cap_off_l[k + 1]],
                                    [t for kind, t, _ in terms if kind == "keyword"],
                                    [t for kind, t, _ in terms if kind != "keyword"])
            if m is not None and trusted is None:
                trusted = m == (packed, doc)
                if not trusted:
                    log.warning("shard rows' terms and documents differ from what this imgsearch makes of them "
                                "(derived_version %s): made here instead", writes.DERIVED_VERSION)
        if packed is not None:
            terms_out.append((pid, packed))
        documents.append((pid, place_terms(doc, pl[2])))
    out_cells = [(pid, c) for pid, c in zip(pids, cells) if c is not None]
    return BulkRows(photos, captions, terms_out, out_cells, documents, pos)


LABELLED = ("label_embedding", "visual_embedding")   # stored only for a row with labels (bulk_rows)
VECTOR_READ_COLUMNS = ["path", "labels", *shards.VECTOR_COLUMNS]   # what bulk_vectors reads of a batch


def bulk_vectors(batch, rows: Sequence[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{kind (store/vectors.KINDS): (photo ids relative 1..n (m,) int64, (m, DIM) float32)}: the vectors that
    bulk_rows stores for the batch rows ``rows`` (photo k at rows[k - 1]), those the FAISS build would read back:
    a null vector is not stored, nor a label or visual vector of a row without labels."""
    from imgsearch.store.vectors import _COLUMN

    k = np.asarray(rows, dtype=np.int64)
    has_labels = np.asarray(batch.column("labels").is_valid().to_numpy(zero_copy_only=False), dtype=bool)[k]
    out = {}
    for kind, name in _COLUMN.items():
        vals, valid = shards.vector_matrix(batch.column(name))
        keep = valid[k] & has_labels if name in LABELLED else valid[k]
        out[kind] = (np.flatnonzero(keep).astype(np.int64) + 1, np.asarray(vals[k[keep]], dtype=np.float32))
    return out


WAL_RESTART_BYTES = 256 << 20   # WAL length past which a bulk transaction waits for the checkpointer first


class BulkWriter:
    """The connection the bulk transactions are written on (one, held for the ingest and then closed, with a larger
    page cache and no foreign-key checks), and a thread that runs their COMMIT. Where the library can be had alone
    (``rollback``: store/journal.hold_for_bulk) the connection writes through a rollback journal, each page once
    into the database file, and the library is back in WAL mode when the writer closes; else through the WAL
    (``wal_autocheckpoint = 0``), which the Checkpointer copies back. A COMMIT writes the transaction's pages (~60 MB
    for 2,000 rows): one SQLite call that releases the GIL, so the next chunk's rows are made meanwhile. begin()
    waits for the previous commit; whole transactions only, as before: an interrupted ingest leaves the commits
    that returned (and the one under way, if it completes)."""

    def __init__(self, store):
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self.conn = store.engine.connect().execution_options(sqlite_immediate=True)
        try:
            # this connection's settings differ from the pool's: it is closed at the end, never handed back
            self.cursor = cur = self.conn.connection.driver_connection.cursor()
            self.conn.detach()
            cur.execute(f"PRAGMA cache_size = {BULK_CACHE_KIB}")
            self.page_size = int(cur.execute("PRAGMA page_size").fetchone()[0])   # the file's own (store/db.PAGE_SIZE)
            # a rollback journal where the library can be had alone (each page written once: store/journal.py),
            # else the WAL, which the checkpointer copies back
            self.rollback = journal.hold_for_bulk(store, cur, BUSY_TIMEOUT_MS)
            if not self.rollback:
                cur.execute("PRAGMA wal_autocheckpoint = 0")
            # no foreign-key lookups: each child row (captions, tags, cells) names a photo inserted just before
            # it in the same transaction (ids base + 1..n), which the check would look up in the photos table
            # once a row (~20 rows a photo: a fifth of the insert time, bench/README.md "Ingest rate")
            cur.execute("PRAGMA foreign_keys = OFF")
            self.checkpointer = None if self.rollback else Checkpointer(store)
        except BaseException:
            self._back_to_wal()
            self.conn.close()
            raise
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bulk-commit")
        self._pending = None   # (future of the COMMIT, called once it has returned)

    def insert(self, r: BulkRows) -> int:
        """The rows of ``r`` inserted, one executemany a table, inside the transaction begun; returns the base
        id (AUTOINCREMENT continued: the ids the ORM would give)."""
        from imgsearch.search import bm25

        cur = self.cursor
        base = int(cur.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'photos'), "
                               "0), coalesce((SELECT max(id) FROM photos), 0))").fetchone()[0])
        cur.executemany(f"INSERT INTO photos ({', '.join(PHOTO_COLUMNS)}) VALUES "
                        f"(? + {base}{', ?' * (len(PHOTO_COLUMNS) - 1)})", r.photos)
        cur.executemany(f"INSERT INTO captions (photo_id, rank, text, score) VALUES (? + {base}, ?, ?, ?)", r.captions)
        cur.executemany(f"INSERT INTO photo_terms (photo_id, terms) VALUES (? + {base}, ?)", r.terms)
        cur.executemany(f"INSERT INTO photo_cells (photo_id, data) VALUES (? + {base}, ?)", r.cells)
        # new ids (AUTOINCREMENT never reuses one): no document to replace, only to insert
        cur.executemany(f"INSERT INTO {bm25.TABLE}(rowid, terms) VALUES (? + {base}, ?)", r.documents)
        return base

    def begin(self):
        """A new transaction (BEGIN IMMEDIATE) once the previous one is committed; the WAL copied back first
        when it has grown past WAL_RESTART_BYTES (this transaction then writes it from its start)."""
        self.wait()
        if self.checkpointer is not None and self.checkpointer.wal_frames * self.page_size > WAL_RESTART_BYTES:
            self.checkpointer.settle()
        return self.conn.begin()

    def commit(self, tx, committed: Callable[[], None]) -> None:
        """COMMIT ``tx`` on the commit thread; ``committed`` is called by the next wait() once it has returned."""
        def run():
            tx.commit()
            if self.checkpointer is not None:
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
        """The commit under way waited for, the library back in WAL mode (after a rollback journal) or the WAL
        copied back, the connection closed (out of the pool: its settings are its own)."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            try:
                self._back_to_wal()
                self.cursor.close()
            finally:
                self.conn.close()          # detached: the connection itself closes
                if self.checkpointer is not None:
                    self.checkpointer.close()

    def _back_to_wal(self) -> None:
        if getattr(self, "rollback", False):
            self.rollback = False
            journal.back_to_wal(self._store, self.cursor, BUSY_TIMEOUT_MS)


class Checkpointer:
    """Copies the WAL back into the database file (``PRAGMA wal_checkpoint(PASSIVE)``) on a thread and a
    connection of its own, after each bulk transaction (kick), while the next one is written: the bulk
    transactions commit with ``wal_autocheckpoint = 0`` so their commit only appends to the WAL, and the copy
    and its two fsyncs (synchronous=NORMAL: the WAL before, the database after) overlap the inserts instead of
    stalling them. Nothing about durability changes: a commit is in the WAL as before, a checkpoint is
    SQLite's own (a crash during it is recovered from the WAL), and a reader still sees whole transactions.

    SQLite writes the WAL from its start again only when a transaction begins with the whole WAL copied back;
    the writer calls settle() before its next transaction once the WAL holds more than WAL_RESTART_BYTES
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
