"""The query path: signals → fusion → re-ranking → relevance cut → hits.

    engine = QueryEngine(store, caches, models)
    engine.search("dog on a beach", k=10, mode="hybrid")         # [Hit], best first
    engine.like(photo_id_or_path, k=10)                          # photos that look like this one
    engine.ranked_lists(text, qvec, "hybrid", n)                 # per-signal lists before fusion (bench/tune_fusion.py)

The ranking depends only on the query, never on k: each signal returns its best FUSION["depth"] photos
whatever k; the lists are fused (z-scores and the fill for a missing photo computed from those lists
only), the hybrid top RERANK["depth"] re-ranked by the captioner's likelihood of the query, and photos
below the relevance bar cut (search/relevance.py). When that gives fewer than k photos whose file
still exists, the lists 4× deeper are fused the same way and the photos not yet ranked appended below
(then 16× ...), until k are found or every signal has given all it has. So the first n results of k=n
are the first n of any larger k, and a vanished file only drops out of the order.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np

from imgsearch.errors import DecodeError, NotFoundError, UserError
from imgsearch.hits import Hit
from imgsearch.model.labels import query_affinity
from imgsearch.model.rerank import rerank, unpack_cells
from imgsearch.paths import resolve_root
from imgsearch.search import bm25, relevance
from imgsearch.search.filters import Excluding, Filters, InFolder, split_query
from imgsearch.search.duplicates import Collapse
from imgsearch.search.hitlist import Details, make_hits
from imgsearch.search.fuse import combined_weights, fuse_lists
from imgsearch.search.settings import FUSION, MODE_SIGNALS, MODES, RELEVANCE, RERANK, label_weight, rerank_weight
from imgsearch.store import hot_reads, queries

log = logging.getLogger(__name__)

Ranked = list[tuple[int, float]]     # (photo id, score), best first

SORTS = ("relevance", "newest", "oldest")
#: sort newest/oldest of a text or like query: the best SORT_DEPTH photos by relevance, ordered by date
#: (a fixed number, whatever k, so that the first n of k=n are the first n of any larger k)
SORT_DEPTH = 1000
#: background worker threads per engine, for the parts of a query that can overlap: BM25 (no query vector
#: needed) while MiniLM runs, a vector search beside the others, the re-ranked photos' rows and half of
#: their cells while the rest are read (numpy, onnxruntime, FAISS and SQLite release the GIL). A query takes
#: an idle one or does the part itself, so concurrent queries never queue for them.
WORKERS = 2


def by_date(hits: list[Hit], newest: bool) -> list[Hit]:
    """``hits`` ordered by date (newest or oldest first; ties and photos without a date keep their order,
    undated last), ranked again from 1."""
    dated = [h for h in hits if h.taken_at is not None]
    dated.sort(key=lambda h: h.taken_at, reverse=newest)      # stable both ways: ties stay in relevance order
    out = dated + [h for h in hits if h.taken_at is None]
    for rank, h in enumerate(out, 1):
        h.rank = rank
    return out


class QueryEngine:
    def __init__(self, store, caches, models):
        self.store, self.caches, self.models = store, caches, models
        self._pool = None            # WORKERS threads for the parts of a query that can overlap
        self._free = threading.BoundedSemaphore(WORKERS)   # one is idle (else a query does the part itself)
        self._lock = threading.Lock()
        self._calibrated: tuple[int, bool] | None = None    # (store revision, relevance.calibrated)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # ------------------------------------------------------------------ any query
    def query(self, text: str | None = None, k: int = 10, mode: str = "hybrid", *,
              like: str | os.PathLike | int | None = None, folder: str | os.PathLike | None = None,
              filters: Filters | None = None, sort: str = "relevance", rerank: bool = True,
              min_score: float | None = None) -> list[Hit]:
        """One query of Library.query: ``text`` (its ``-word`` terms excluded: search/filters.py) and/or the
        photo ``like``, among the photos ``filters`` allow (and ``folder``: at or below it), by relevance or by
        date (``sort``).

        Text and like: both rankings fused (``search(like=...)``). No text (or only excluded terms) and no
        ``like``: the allowed photos by date, newest first unless ``sort="oldest"`` (an error when nothing
        filters either: "empty query"). ``sort`` newest/oldest with text or like: the best SORT_DEPTH by
        relevance, by date (photos without any date last), each keeping its relevance score."""
        if sort not in SORTS:
            raise UserError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        if mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        words = split_query(text)
        f = Filters(list(filters.include), list(filters.exclude)) if filters is not None else Filters()
        folder = self._folder(folder)
        if folder is not None:
            f.include.insert(0, InFolder(folder))
        if words.excluded:
            f.exclude.append(Excluding(words.excluded))
        k = int(k)
        if not words.text and like is None:
            if not f and sort == "relevance" and not (text or "").strip():
                raise UserError("empty query")
            return self.browse(k, f.allowed(self.store) if f else None, newest=sort != "oldest")
        if k < 1:
            return []
        allowed = f.allowed(self.store) if f else None
        n = k if sort == "relevance" else SORT_DEPTH
        if words.text:
            hits = self.search(words.text, n, mode, rerank=rerank, min_score=min_score, allowed=allowed, like=like)
        else:
            hits = self.like(like, n, allowed=allowed)
        if sort != "relevance":
            hits = by_date(hits, newest=sort == "newest")
        return hits[:k]

    def browse(self, k: int, allowed: set[int] | None = None, newest: bool = True) -> list[Hit]:
        """The first ``k`` photos (among ``allowed``; None: all) by date — EXIF date taken, else the file's
        mtime — newest or oldest first (score 0)."""
        k = int(k)
        n = max(2 * k, 64)
        while k >= 1:
            ranked = queries.by_date(self.store, allowed, newest, n)
            hits = self.hits(ranked, k, collapse=Collapse(allowed))
            if len(hits) >= k or len(ranked) < n:
                return hits
            n *= 4
        return []

    # ------------------------------------------------------------------ text queries
    def search(self, text: str | None, k: int = 10, mode: str = "hybrid", folder: str | os.PathLike | None = None,
               rerank: bool = True, min_score: float | None = None, *, allowed: set[int] | None = None,
               like: str | os.PathLike | int | None = None) -> list[Hit]:
        """The ``k`` best photos for free ``text`` (``folder``: only photos at or below it; ``allowed``: only
        these ids) whose relevance is at least ``min_score`` (None: the calibrated default; <= 0: no cut;
        search/relevance.py). ``like``: a photo (id or path) whose like-lists (query by example) are fused
        with the text's lists, each side's weights scaled to sum to 1 so that the text and the photo count
        equally; the cut is the text's (a photo must still be about ``text``), and there is no re-ranking."""
        if mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        text = (text or "").strip()
        if not text:
            raise UserError("empty query")
        k = int(k)
        bar = relevance.bar(min_score) if min_score is not None else None
        if k < 1:
            return []
        folder = self._folder(folder)
        like_vectors = self.like_vectors(like) if like is not None else None
        if not queries.has_searchable(self.store):
            return []
        if (bar is None or bar > 0) and not self.knows_a_word(text, mode):
            return []
        bar = self.default_bar() if bar is None else bar
        if folder is not None:
            under = queries.ids_under(self.store, folder)
            allowed = under if allowed is None else allowed & under
        n0 = int(FUSION["depth"])
        early = None
        if mode == "hybrid":
            # BM25 needs no query vector: it runs on a worker while MiniLM and FAISS run here
            # (numpy, onnxruntime and FAISS release the GIL)
            early = self._overlap(self.bm25_search, text, n0, allowed)
        qvec = self.models.embedder().embed([text])[0] if mode not in ("bm25", "text") else None

        def lists_for(n: int):
            nonlocal early
            pre = early if n == n0 else None      # still running: joined after the vector searches
            early = None
            lists = self.ranked_lists(text, qvec, mode, n, allowed, bm25=pre, weights=weights)
            if like_vectors:
                lists.update({f"like_{kind}": lst for kind, lst in self._like_lists(like_vectors, n, allowed).items()})
            return lists

        weights = self.signal_weights(text, qvec, mode)
        if like_vectors:
            weights = combined_weights(weights, MODE_SIGNALS[mode], like_vectors)
            rerank = False
        weight = rerank_weight(text, weights.get("labels", 0.0)) if mode == "hybrid" and rerank else 0.0
        details = Details(self.store)
        # the re-ranked photos' rows are read on a worker while the re-ranker scores them
        post = ((lambda fused: self.rerank(text, fused, weight, ahead=lambda ids: details.ahead(self._overlap, ids)))
                if weight > 0 else None)
        kinds = relevance.counted(MODE_SIGNALS[mode])
        try:
            return self._collect(lists_for, k, weights, post=post,
                                 cut=lambda ranked, lists, n: relevance.cut(ranked, lists, n, kinds, bar),
                                 done=lambda lists, n: relevance.exhausted(lists, n, kinds, bar), allowed=allowed,
                                 details=details)
        finally:
            if early is not None:
                early.result()
            details.join()

    def signal_weights(self, text: str, qvec, mode: str) -> dict[str, float]:
        """The fusion weight of each signal for this query: FUSION["weights"], and for the label signal a
        weight that grows with how much the query is about one of ImageNet's things (settings.label_weight)."""
        weights = dict(FUSION["weights"])
        if "labels" in MODE_SIGNALS[mode] and qvec is not None:
            weights["labels"] = label_weight(query_affinity(qvec))
        return weights

    def default_bar(self) -> float:
        """The relevance bar of a query without min_score: RELEVANCE["min_score"] for a library described by
        the checkpoint it was calibrated on, else 0 (search/relevance.py); known per store revision."""
        rev = self.store.revision()
        if self._calibrated is None or self._calibrated[0] != rev:
            self._calibrated = (rev, relevance.calibrated(self.store))
        return float(RELEVANCE["min_score"]) if self._calibrated[1] else 0.0

    def knows_a_word(self, text: str, mode: str = "hybrid") -> bool:
        """Whether ``text`` has a content word that the text embedder's vocabulary, the captioner's training
        captions or the library's own captions, keywords and tags know (search/relevance.py). In bm25
        mode any content word will do: BM25 itself matches only words the library has."""
        words = relevance.content_words(text)
        if not words or mode in ("bm25", "text"):
            return bool(words)
        if relevance.in_lexicon(words, self.models.embedder().tokenize):
            return True
        return bool(self.bm25_search(text, 1)) or bool(self.text_search(text, 1))

    def ranked_lists(self, text: str, qvec, mode: str, n: int, allowed: set[int] | None = None,
                     bm25: "Ranked | Future | None" = None, weights: dict[str, float] | None = None
                     ) -> dict[str, Ranked]:
        """The per-signal ranked lists of a query, before fusion (``bm25``: that list, if already computed
        for this ``n``, or the Future computing it: waited for after the other signals; ``weights``: signals
        weighted 0 there are not searched, as fusion would ignore them).
        Empty lists are left out."""
        lists: dict[str, Ranked] = {}
        signals = [s for s in MODE_SIGNALS[mode]
                   if weights is None or len(MODE_SIGNALS[mode]) == 1 or weights.get(s, 1.0) > 0]
        dense = [s for s in signals if s not in ("bm25", "text")]
        # a vector search on an idle worker while the others run here (FAISS releases the GIL)
        aside = {s: self._overlap(self.dense_search, s, qvec, n, allowed) for s in dense[1:2]}
        try:
            for signal in signals:
                if signal == "bm25":
                    if bm25 is None:
                        lists["bm25"] = self.bm25_search(text, n, allowed)
                    elif not isinstance(bm25, Future):
                        lists["bm25"] = bm25
                elif signal == "text":
                    lists["text"] = self.text_search(text, n, allowed)
                elif aside.get(signal) is None:
                    lists[signal] = self.dense_search(signal, qvec, n, allowed)
        finally:
            for signal, fut in aside.items():
                if fut is not None:
                    lists[signal] = fut.result()
            if isinstance(bm25, Future):
                got = bm25.result()
                if "bm25" in signals:
                    lists["bm25"] = got
        return {name: lst for name in signals if (lst := lists.get(name))}

    def bm25_search(self, text: str, n: int, allowed: set[int] | None = None) -> Ranked:
        """BM25 over captions, keywords and tags: the precomputed scores when current, else FTS5."""
        cache = self.caches.bm25_cache()
        if cache is not None:
            return cache.search(text, n, ids_filter=allowed)
        with self.store.engine.connect() as conn:
            return bm25.search(conn, text, n, ids_filter=allowed)

    def text_search(self, text: str, n: int, allowed: set[int] | None = None) -> Ranked:
        """BM25 over the text read in the photos (OCR; its own FTS5 table: only photos with text are in it)."""
        with self.store.engine.connect() as conn:
            return bm25.search(conn, text, n, ids_filter=allowed, table=bm25.OCR_TABLE)

    def dense_search(self, kind: str, qvec, n: int, allowed: set[int] | None = None) -> Ranked:
        """Cosine of ``qvec`` with the stored vectors of ``kind`` ("caption" | "image")."""
        vi = self.caches.vector_index(kind)
        if len(vi) == 0:
            return []
        ids, scores = vi.search(np.asarray(qvec, dtype=np.float32), n,
                                allowed_ids=None if allowed is None else np.fromiter(allowed, dtype=np.int64))
        return [(int(i), float(sc)) for i, sc in zip(ids, scores) if int(i) >= 0]

    # ------------------------------------------------------------------ query by example
    def like(self, photo: str | os.PathLike | int, k: int = 10, folder: str | os.PathLike | None = None, *,
             allowed: set[int] | None = None) -> list[Hit]:
        """The photos most similar to ``photo`` (an indexed photo's id, or a path, indexed or not)."""
        folder = self._folder(folder)
        weights = FUSION["like_weights"]
        vectors = self.like_vectors(photo)
        if folder is not None:
            under = queries.ids_under(self.store, folder)
            allowed = under if allowed is None else allowed & under
        return self._collect(lambda n: self._like_lists(vectors, n, allowed), int(k), weights, allowed=allowed)

    def like_vectors(self, photo: str | os.PathLike | int) -> dict[str, np.ndarray]:
        """The vectors of ``photo`` that query by example searches with (FUSION["like_weights"] > 0)."""
        weights = FUSION["like_weights"]
        return {kind: v for kind, v in self.photo_vectors(photo).items() if weights.get(kind, 0) > 0}

    def _like_lists(self, vectors: dict[str, np.ndarray], n: int, allowed: set[int] | None) -> dict[str, Ranked]:
        lists = {kind: self.dense_search(kind, v, n, allowed) for kind, v in vectors.items()}
        return {name: lst for name, lst in lists.items() if lst}

    def photo_vectors(self, photo: str | os.PathLike | int) -> dict[str, np.ndarray]:
        """{vector kind: vector} of an indexed photo (by id or path) — "caption" always, "image", "labels" and
        "visual" when it has them — else computed now from the file."""
        key = photo if isinstance(photo, int) else os.path.abspath(os.fspath(photo))
        row = queries.stored_vectors(self.store, key)
        if row is not None and row["caption"] is not None:
            return {kind: np.frombuffer(blob, dtype="<f4") for kind, blob in row.items() if blob is not None}
        if isinstance(photo, int):
            raise NotFoundError(f"no indexed photo with id {photo}")
        if not os.path.isfile(key):
            raise NotFoundError(f"no such photo: {key}")
        from imgsearch.indexer.decode import open_photo, to_model_input
        from imgsearch.text.caption_vectors import N_BEST, caption_vectors

        cap = self.models.captioner()
        try:
            image = to_model_input(open_photo(key, target=cap.image_size), cap.image_size, cap.resize)
        except DecodeError as e:
            raise UserError(f"cannot read {key}: {e}") from None
        d = cap.describe(image[None], beam=3, n_best=N_BEST)[0]
        vec = caption_vectors(self.models.embedder(), [[c for c, _ in d.captions]], [[t for t, _ in d.tags]])[0]
        found = {"caption": vec, "image": d.image_embedding, "labels": d.label_embedding,
                 "visual": getattr(d, "visual_embedding", None)}
        return {kind: np.asarray(v, dtype=np.float32) for kind, v in found.items() if v is not None}

    # ------------------------------------------------------------------ re-ranking
    def rerank(self, text: str, fused: Ranked, weight: float | None = None,
               ahead: Callable[[list[int]], None] | None = None) -> Ranked:
        """``fused`` with its top RERANK["depth"] re-ordered by log P(text | photo) (model/rerank.py), at
        ``weight`` (default RERANK["weight"]; a query gets settings.rerank_weight). ``ahead(ids)`` is
        called with those photos' ids before their cells are read (the engine reads their rows meanwhile).
        Unchanged when the library has no scorer or cells, or no word of ``text`` is in the vocabulary;
        damaged cells or a broken scorer cost the query its re-ranking, never the query."""
        depth = int(RERANK["depth"])
        if len(fused) < 2 or depth < 2:
            return fused
        scorer = self.scorer()
        tokens = scorer.tokens(text) if scorer is not None else None
        if tokens is None:
            return fused
        ids = [i for i, _ in fused[:depth]]
        if ahead is not None:
            ahead(ids)
        # the cells are random reads from a file larger than the page cache: half are read on a worker
        half = len(ids) // 2
        other = self._overlap(hot_reads.cells, self.store, ids[half:], scorer.version)
        blobs = hot_reads.cells(self.store, ids[:half] if other is not None else ids, scorer.version)
        if other is not None:
            blobs.update(other.result())
        if not blobs:
            return fused
        have = [i for i in ids if i in blobs]
        try:
            ll = scorer.score(tokens, unpack_cells([blobs[i] for i in have]))
        except Exception as e:  # noqa: BLE001 - damaged cells or a broken scorer of any kind: the fused order
            log.warning("re-ranking skipped: %s: %s", type(e).__name__, e)
            return fused
        return rerank(fused, dict(zip(have, ll.tolist())), depth,
                      float(RERANK["weight"] if weight is None else weight))

    def scorer(self):
        """The re-ranking scorer of the library's checkpoint, or None (no re-ranking)."""
        return self.models.scorer(lambda version: queries.has_cells(self.store, version))

    # ------------------------------------------------------------------ helpers
    def _folder(self, folder) -> str | None:
        if folder is None:
            return None
        folder = resolve_root(folder)
        if not os.path.isdir(folder):
            raise UserError(f"no such folder: {folder}")
        return folder

    def _overlap(self, fn, *args):
        """``fn(*args)`` started on one of the WORKERS background threads when one is idle (a Future); None when
        all are busy (other queries, or this one's other parts): the caller then does the work itself, so
        concurrent queries never queue for them."""
        free = self._free
        if not free.acquire(blocking=False):
            return None
        try:
            fut = self._background().submit(fn, *args)
        except BaseException:
            free.release()
            raise
        fut.add_done_callback(lambda _f: free.release())
        return fut

    def _background(self):
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="imgsearch-query")
            return self._pool

    def _collect(self, lists_for: Callable[[int], dict[str, Ranked]], k: int, weights: dict[str, float],
                 post: Callable[[Ranked], Ranked] | None = None,
                 cut: Callable[[Ranked, dict[str, Ranked], int], Ranked] | None = None,
                 done: Callable[[dict[str, Ranked], int], bool] | None = None,
                 allowed: set[int] | None = None, details: Details | None = None) -> list[Hit]:
        """Fuse the signals' top FUSION["depth"] (then ``post``-process, e.g. re-rank, and ``cut`` the fused
        list) into the first tier of the ranking; while fewer than ``k`` photos whose file still exists
        are found, fuse the lists 4× deeper the same way and append the photos not ranked yet (the next
        tier), until every signal has given all it has (a list shorter than asked for) or ``done``.
        Exact copies are one hit, at a copy among ``allowed`` (the ids the query may return; None: any)."""
        n = depth = int(FUSION["depth"])
        collapse = Collapse(allowed)
        details = Details(self.store) if details is None else details
        hits: list[Hit] = []
        seen: set[int] = set()
        last = math.inf                      # lowest score so far: a deeper tier is shifted below it
        while True:
            lists = lists_for(n)
            fused = fuse_lists(lists, weights)
            if post is not None and n == depth:
                fused = post(fused)
            tier = [(i, s) for i, s in fused if i not in seen]
            seen.update(i for i, _ in tier)
            if tier and tier[0][1] > last:
                shift = tier[0][1] - last   # s - shift can round to 1 ulp above last: clamped, so scores never rise
                tier = [(i, min(s - shift, last)) for i, s in tier]
            if tier:
                last = tier[-1][1]
            hits += self.hits(cut(tier, lists, n) if cut is not None else tier, k - len(hits), start=len(hits),
                              collapse=collapse, details=details)
            if len(hits) >= k or all(len(lst) < n for lst in lists.values()) or (done is not None and done(lists, n)):
                return hits
            n *= 4

    def hits(self, ranked: Sequence[tuple[int, float]], k: int, start: int = 0,
             collapse: Collapse | None = None, details: Details | None = None) -> list[Hit]:
        """:class:`Hit`s for the first ``k`` ranked ids whose file still exists, best first, ranked from
        ``start + 1``; exact copies of one photo are one hit (``collapse``: what this query showed already;
        ``details``: the rows this query has read or is reading ahead; search/hitlist.py)."""
        return make_hits(details if details is not None else Details(self.store), ranked, k, start, collapse)
