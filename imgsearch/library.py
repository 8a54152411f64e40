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
from imgsearch.files import remove_stale_temps
from imgsearch.hits import Hit
from imgsearch.limits import MAX_QUERY_CHARS, check_k, query_length
from imgsearch.indexer.report import IndexReport
from imgsearch.models import Models
from imgsearch.search.caches import SearchCaches
from imgsearch.search.engine import QueryEngine
from imgsearch.search.fuse import fuse_lists
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
        """Open the library at ``path`` — its ``library.db`` file, or the folder holding it (default:
        ``$IMGSEARCH_DB``, else ``$XDG_DATA_HOME/imgsearch/library.db``, else
        ``~/.local/share/imgsearch/library.db``); it is created, with its folder, unless ``create=False``.

        ``device``: where the captioner runs when indexing (auto | cpu | cuda | cuda:N; auto = cuda when
        available). ``model``: a captioner checkpoint (default: the one shipped in the package).
        ``captioner``: an already-loaded :class:`~imgsearch.model.captioner.Captioner` to use instead.
        ``models``: a whole :class:`~imgsearch.models.Models` (then ``device``, ``model`` and ``captioner``
        are not used). ``read_only``: search only (None: decide from whether the library can be written).
        Nothing heavy is loaded here: the models load on first use, and searching never imports torch.

        Raises :class:`~imgsearch.errors.StoreError` (``create=False`` and no library there, a file that is
        not an imgsearch library, a damaged or unreadable database file) and
        :class:`~imgsearch.errors.UserError` (a bad ``device`` spelling); both derive from
        :class:`~imgsearch.errors.ImgsearchError` (alias ``LibraryError``)."""
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
              verify: bool = False, ocr: bool | None = None, engine: str = "local", address: str | None = None,
              out: str | os.PathLike | None = None, ingest: bool = True, path_map: Iterable[str] = (),
              actors: int | None = None) -> IndexReport:
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
        ``ocr=True``: read the text inside photos too (screenshots, signs, receipts: indexer/ocr.py, the extra
        ``imgsearch[ocr]``; about 1 s of CPU a photo with text, 0.2 s without), including the photos described
        before (decode + OCR only, no re-captioning), and remember it: later runs read new photos too
        (``ocr=None``, the default, is the library's setting; ``ocr=False`` turns it off). Raises
        :class:`~imgsearch.indexer.ocr.OcrUnavailable` (a UserError) when asked for and not installed.

        ``engine="ray"`` (the extra ``imgsearch[ray]``): decode and caption on a Ray cluster (``address``
        "HEAD:6379"; None: a local Ray instance) — planning and every write stay here. The work manifest and the
        cluster's Parquet shards go to the run folder ``out``; then the shards are ingested (``ingest=False``:
        later, :meth:`ingest`). The same call again resumes a killed run: only photos without a shard row are
        submitted. ``path_map``: "SRC=DST" for nodes that see the photos at DST; ``actors``: captioning actors
        (default: one per GPU, else half the CPUs). Returns a :class:`~imgsearch.cluster.run.ClusterReport`
        (an IndexReport). OCR is not read on the cluster (index with ``ocr=True`` locally).
        """
        if engine not in ("local", "ray"):
            raise UserError(f"unknown engine {engine!r}: local | ray")
        if engine == "ray":
            return self._index_ray(paths, out=out, address=address, ingest=ingest, path_map=path_map,
                                   batch_size=batch_size, beam=beam, actors=actors, device=device,
                                   retry_failed=retry_failed, prune_empty=prune_empty, verify=verify, ocr=ocr,
                                   progress=progress)
        if address is not None or out is not None or path_map:
            raise UserError("address, out and path_map are for engine=\"ray\"")
        from imgsearch.indexer import ocr as ocr_reader
        from imgsearch.indexer.lock import index_lock          # the indexing parts: a query process never
        from imgsearch.indexer.runner import IndexRunner      # needs them
        from imgsearch.indexer.scan import RootNotFoundError

        roots = self._roots(paths)
        if batch_size < 1:
            raise UserError("batch size must be at least 1")
        if device is not None:
            device = parse_device(device)
        if ocr:
            ocr_reader.require()
        store = self._writable_store()
        with index_lock(self.path):
            ocr = self._ocr_setting(store, ocr, ocr_reader)
            rev0 = store.cache_key()
            runner = IndexRunner(
                store, roots,
                get_captioner=lambda: self.models.captioner(device),
                get_version=self.models.version,
                get_embedder=self.models.embedder,
                batch_size=batch_size, workers=workers, beam=beam,
                progress=progress if callable(progress) else None, retry_failed=retry_failed,
                prune_empty=prune_empty, verify=verify, ocr=ocr,
            )
            try:
                report = runner.run()
            except RootNotFoundError as e:   # a root vanished between the check above and the scan
                raise UserError(f"no such folder or file: {e.filename}") from None
            self.caches.update(rev0, runner.touched)
            remove_stale_temps(self.path.parent, self.path.name)   # what a killed save left (too fresh at open)
        if self.models.captioner_loaded:
            # the captioner (and torch) is loaded now: export the query scorer so that queries need neither
            self.models.export_scorer(lambda version: queries.has_cells(store, version))
        return report

    def _index_ray(self, paths, *, out, ocr, progress, device, **kw):
        """Library.index(engine="ray"): imgsearch/cluster/run.py, then the caches as after any index run."""
        from imgsearch.cluster import run as cluster_run

        roots = self._roots(paths)
        if out is None:
            raise UserError("engine=\"ray\" needs a run folder (out=, --out RUN_DIR) for the manifest and the shards")
        if ocr:
            raise UserError("OCR is not read on the cluster: index with ocr=True locally after the Ray run")
        return cluster_run.index(self, roots, out, device=parse_device(device) if device is not None else None,
                                 progress=progress if callable(progress) else None, **kw)

    def ingest(self, run_dir: str | os.PathLike, progress: ProgressFn | bool | None = None):
        """Write the Parquet shards of a Ray run (``index(engine="ray", out=run_dir)``) into the library with the
        same rules as ``index`` (moves, copies, failures), one transaction per few thousand rows, then update the
        search caches. Idempotent: twice, or again after a crash half-way, gives the same library. Returns a
        :class:`~imgsearch.cluster.run.ClusterReport`; UserError when ``run_dir`` is not a run folder."""
        from imgsearch.cluster import run as cluster_run

        return cluster_run.ingest(self, run_dir, progress=progress if callable(progress) else None)

    @staticmethod
    def _roots(paths) -> list[str]:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        roots = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]
        if not roots:
            raise UserError("nothing to index: give at least one folder")
        for r in roots:
            if not os.path.exists(r):
                raise UserError(f"no such folder or file: {r}")
        return roots

    @staticmethod
    def _ocr_setting(store, ocr: bool | None, reader) -> bool:
        """Whether this run reads text (``ocr``; None: the library's setting, meta "ocr"), remembered."""
        from imgsearch.store.db import get_meta, set_meta

        if ocr is None:
            with store.session() as s:
                on = get_meta(s, "ocr") == "on"
            why = reader.missing() if on else None
            if why is not None:
                import logging

                logging.getLogger(__name__).warning("this library reads text in photos, but %s", why)
                return False
            return on
        with store.write() as s:
            set_meta(s, "ocr", "on" if ocr else "off")
        return bool(ocr)

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
              rerank: bool = True, min_score: float | None = None, *, after=None, before=None,
              sort: str = "relevance", near=None, within: float | None = None) -> list[Hit]:
        """The ``k`` best photos for free ``text`` — or, with ``like`` (a photo path, indexed or not, or a
        photo id), the photos most similar to that photo; with both, photos that match ``text`` ranked by
        the text's and the photo's lists fused, each side weighing the same. Photos whose file is gone are
        skipped.

        Filters (all may be combined): ``in_folder``: only photos at or below it. ``after`` / ``before``:
        only photos dated in that range — a year "2024", a month "2024-06", a day "2024-06-15" (or a
        ``date`` / ``datetime``), both bounds including the period they name; a photo's date is its EXIF
        date taken, else its file's mtime (``Hit.taken_at``, ``Hit.date_source`` "exif" | "file"). A word of
        ``text`` written ``-word`` excludes every photo whose captions, keywords or tags hold it (stemmed:
        ``-beaches`` = ``-beach``), in every mode. ``near``: only photos whose EXIF GPS position is within
        ``within`` km (default 25) of a place — a name ("Lisbon", "Paris, Texas": the most populous GeoNames
        place of that name), "LAT,LON" or a (lat, lon) pair (imgsearch/places.py); an unknown name raises
        UserError.

        ``sort``: "relevance" (default), or "newest" / "oldest": the best 1,000 by relevance ordered by date.
        Without ``text`` (or only ``-word`` terms) and ``like``, the filtered photos are listed by date
        (newest first unless ``sort="oldest"``; score 0); with no filter and no sort either that is an error.

        In ``hybrid`` mode the fused top RERANK["depth"] are re-ranked by how likely the captioner is to
        write ``text`` for each photo (``rerank=False``: the fused order as it is; never with ``like``).
        ``min_score``: photos whose relevance to ``text`` is lower are cut (None: the calibrated default;
        0: none; search/relevance.py). Bad arguments raise UserError.

        Modes (``mode``, imgsearch.search.settings.MODES): ``hybrid`` (default) fuses every signal below;
        ``bm25`` matches the words of ``text`` against captions, keywords and tags; ``dense`` compares
        ``text``'s MiniLM embedding with each photo's caption embedding; ``image`` with each photo's
        embedding (the projection head); ``labels`` with its zero-shot ImageNet label vector; ``text`` matches
        the words of ``text`` against the text read inside the photos (OCR: ``index(ocr=True)``), alone.

        Scores (``Hit.score``) order the hits of one query, best first, and mean nothing across queries or
        modes: ``bm25`` and ``text`` are BM25 scores, ``dense`` / ``image`` / ``labels`` a cosine (-1..1), ``hybrid``
        the weighted sum of each signal's z-score (plus the re-ranker's), so it can be negative; ``like``
        fuses the same way; a date-only listing scores 0. Whether a photo is relevant at all is the
        ``min_score`` cut, on a separate 0..1 relevance, not on the score.

        ``k``: the number of hits wanted (at least 1; fewer come back when fewer photos pass the cut).
        Hits are ranked the same whatever ``k``: the first n of ``k=n`` are the first n of any larger ``k``.

        Raises :class:`~imgsearch.errors.UserError` for an empty query or one longer than
        ``imgsearch.limits.MAX_QUERY_CHARS`` characters, ``k`` below 1, an unknown ``mode`` or ``sort``, a
date it cannot read, ``in_folder`` that is not a folder, ``like`` naming no readable photo, or a
        closed library; :class:`~imgsearch.errors.NotFoundError` for a ``like`` photo id that is not in the
        library. All derive from :class:`~imgsearch.errors.ImgsearchError`."""
        self._open_store()
        k = check_k(k)
        if text is not None and query_length(text) > MAX_QUERY_CHARS:
            raise UserError(f"query too long: {query_length(text)} characters (at most {MAX_QUERY_CHARS})")
        if in_folder is not None and os.path.isfile(os.path.expanduser(os.fspath(in_folder))):
            raise UserError(f"not a folder: {os.fspath(in_folder)} is a file (the folder filter takes a folder; "
                            "to find photos like this one, use like=)")
        from imgsearch.search import filters

        more = [] if near is None else [self.near(near, within)]
        if near is None and within is not None:
            raise UserError("within needs near (a place or LAT,LON)")
        return self.engine.query(text, k, mode, like=like, folder=in_folder, sort=sort,
                                 filters=filters.build(after=after, before=before, more=more), rerank=rerank,
                                 min_score=min_score)

    @staticmethod
    def near(where, within: float | None = None):
        """The :class:`~imgsearch.places.Near` filter of ``query(near=where, within=within)``: a place name, "LAT,LON"
        or (lat, lon), resolved through the shipped GeoNames data (UserError: unknown place, bad position)."""
        from imgsearch import places

        return places.resolve_near(where, within)

    def places(self) -> list[dict]:
        """Where the library's photos were taken: [{"place": "Paris, Île-de-France, France", "photos": n}], most
        photos first — the nearest GeoNames place of each photo's EXIF GPS position (photos without GPS, or
        farther than places.MAX_KM from any place, have none)."""
        return [{"place": p, "photos": n} for p, n in queries.place_counts(self._open_store())]

    def duplicates(self, near: bool = False, folder: str | os.PathLike | None = None,
                   threshold: float | None = None) -> list:
        """Groups of copies among the good photos whose files exist (at or below ``folder``: both copies there),
        largest groups first, as :class:`~imgsearch.search.duplicates.DuplicateGroup` (``.kind``, ``.photos``,
        ``.paths``, ``.to_dict()``). Exact groups share one content hash, the photo indexed first listed first.
        ``near=True``: photos that look the same — resized, re-encoded, lightly cropped or edited copies, and
        exact ones — linked where their visual vectors' cosine is at least ``threshold`` (default
        search/duplicates.NEAR_THRESHOLD, measured in bench/results/near_duplicates.txt) and their layouts
        agree; the largest photo first, each with its ``similarity`` to it. Query results already fold exact
        copies into one hit (``Hit.copies``)."""
        from imgsearch.search import duplicates

        store = self._open_store()
        root = None
        if folder is not None:
            root = _paths.resolve_root(folder)
            if not os.path.isdir(root):
                raise UserError(f"no such folder: {root}")
        if near:
            return duplicates.near_groups(store, self.caches, root, threshold)
        if threshold is not None:
            raise UserError("a threshold is for near duplicates: near=True (--near)")
        return duplicates.exact_groups(store, root)

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

    # ------------------------------------------------------------------ start page
    SUGGESTION_SAMPLE = 5000   # suggestions() reads the words of the photos added last, this many at most

    def recent(self, k: int = 24) -> list[Hit]:
        """The ``k`` photos added to the library last, newest first (photos whose file is gone are skipped),
        as :class:`Hit`s whose ``score`` is 0.0 (no query: nothing to score)."""
        k = check_k(k)
        ids = queries.recent_ids(self._open_store(), 2 * k + 16)
        return self.engine.hits([(i, 0.0) for i in ids], k)

    def suggestions(self, n: int = 6) -> list[str]:
        """``n`` example searches made from the library's own frequent words: the caption keywords and tags
        that most photos have (among the :attr:`SUGGESTION_SAMPLE` added last), stop words, numbers and
        one- or two-letter words left out; words that more than half of the photos have (they tell no
        photo apart) come after the others."""
        from imgsearch.text.normalize import STOPWORDS, tokenize

        n = int(n)
        if n < 1:
            return []
        total, freq = self._per_revision("terms", lambda store: queries.term_frequencies(store, self.SUGGESTION_SAMPLE))
        good, common = [], []
        for term, df in freq:
            words = tokenize(term)
            if not words or any(w in STOPWORDS or w.isdigit() or len(w) < 3 for w in words):
                continue
            (common if total >= 4 and 2 * df > total else good).append(term.strip())
        return list(dict.fromkeys(good + common))[:n]

    def summary(self) -> dict:
        """What the start page says about the library: ``photos`` (good ones), ``folders`` holding them,
        ``last_index`` (the latest finished index run, as in :meth:`status`, or None) and ``db_path``."""
        photos, folders = self._per_revision("counts", queries.library_counts)
        return {"photos": photos, "folders": folders, "last_index": queries.last_runs(self._open_store())[1],
                "db_path": str(self.path)}

    def _per_revision(self, name: str, read):
        """``read(store)``, computed once per store revision (the counts read every row: seconds at 1M photos,
        and the start page asks for them on every visit)."""
        store = self._open_store()
        key = (name, store.cache_key())
        cache = self.__dict__.setdefault("_start_page_cache", {})
        if key not in cache:
            value = read(store)
            for old in [k for k in cache if k[0] == name]:
                cache.pop(old, None)
            cache[key] = value
        return cache[key]


def _size_on_disk(db_path: Path) -> int:
    """Bytes of the library's files and thumbnails."""
    size = sum(p.stat().st_size for p in _paths.library_files(db_path) if p.exists())
    thumbs = _paths.thumbs_dir(db_path)
    if thumbs.is_dir():
        size += sum(f.stat().st_size for f in thumbs.rglob("*") if f.is_file())
    return int(size)
