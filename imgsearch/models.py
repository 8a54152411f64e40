"""The models a library uses, loaded on first use and shared by its index runs and queries.

    models = Models()                          # the shipped checkpoint, device "auto"
    models = Models("runs/x/best.pt", "cuda")  # another checkpoint / device
    models = Models(captioner=tiny)            # an already-loaded captioner (tests build a tiny one)

- the **captioner** (torch): only when an index run has photos to describe, or a ``like`` query names a
  photo that is not indexed;
- the **text embedder** (MiniLM on ONNX Runtime or NumPy, no torch): on the first query that needs a vector;
- the **query scorer** of re-ranking (an ONNX graph cached per checkpoint, no torch; one that does not load
  is removed, and the query goes on without re-ranking until an index run exports it again);
- the checkpoint **version** that a re-index would write, read from the file without torch.

Thread-safe: the web server queries from several threads.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from imgsearch.devices import device_type
from imgsearch.errors import ModelError, UserError

log = logging.getLogger(__name__)


class Models:
    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str = "auto", *,
                 captioner=None, embedder=None):
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.device = device
        self._captioner = captioner
        self._owns_captioner = False     # loaded here (so it may be reloaded on another device)
        self._embedder = embedder
        self._scorer = None              # QueryScorer; False: none for this checkpoint
        self._scorer_dropped: Path | None = None   # a cached scorer removed as unloadable: looked for again
        #: intra-op threads of the re-ranking scorer (None: every core, up to 4 — one query at a time runs
        #: fastest so: 6.2 ms for 30 photos on 2 cores, 10.7 ms on one). The web server sets half the cores
        #: before its first query: concurrent queries then each score on their own core.
        self.scorer_threads: int | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ captioner
    @property
    def captioner_loaded(self) -> bool:
        return self._captioner is not None

    def captioner(self, device: str | None = None):
        """The captioner (loaded on first use; ``device`` reloads one loaded here on another device)."""
        with self._lock:
            want = device or self.device
            cap = self._captioner
            if cap is not None and device is not None and self._owns_captioner \
                    and device_type(want) != getattr(cap.device, "type", None):
                cap = None
            if cap is None:
                from imgsearch.model.captioner import Captioner

                try:
                    cap = Captioner.load(self.checkpoint, device=want)
                except ValueError as e:  # a device or checkpoint field torch refuses
                    raise ModelError(str(e)) from None
                if getattr(cap, "checkpoint_path", None) is None:   # named by errors of the run (indexer)
                    from imgsearch.model.versions import shipped_checkpoint

                    cap.checkpoint_path = str(self.checkpoint if self.checkpoint is not None else shipped_checkpoint())
                self._captioner = cap
                self._owns_captioner = True
            return cap

    def version(self) -> str:
        """The version a re-index would write, without loading the model (or torch)."""
        if self._captioner is not None:
            return self._captioner.version
        from imgsearch.model.versions import checkpoint_version, shipped_checkpoint

        path = self.checkpoint if self.checkpoint is not None else shipped_checkpoint()
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        return checkpoint_version(path)

    # ------------------------------------------------------------------ text embedder
    def embedder(self):
        emb = self._embedder
        if emb is not None:       # loaded: concurrent queries share it without the lock (ONNX Runtime's run is
            return emb            # thread-safe; MiniLM runs on bounded intra-op threads, text/minilm_onnx.py)
        with self._lock:
            if self._embedder is None:
                from imgsearch.text.embed import TextEmbedder

                try:
                    self._embedder = TextEmbedder.load()
                except Exception as e:  # noqa: BLE001 - whatever stops MiniLM loading (missing package, damaged weights)
                    raise ModelError(f"cannot load the text embedder: {e}") from None
            return self._embedder

    # ------------------------------------------------------------------ re-ranking scorer
    def scorer(self, has_cells: Callable[[str], bool]):
        """The re-ranking QueryScorer of the checkpoint: the cached ONNX graph (no torch) when there is one;
        else, when the captioner is loaded or ``has_cells(version)`` says photos of this version can be
        re-ranked, made from the captioner (once). None: no re-ranking. Never raises: whatever stops the
        scorer loading costs the queries their re-ranking, never the query."""
        scorer = self._scorer
        if scorer:                # loaded: shared by concurrent queries without the lock
            return scorer
        with self._lock:
            if self._scorer is False and self._scorer_dropped is not None and self._scorer_dropped.is_file():
                self._scorer = None      # an index run has exported the removed scorer again: use it
            if self._scorer is None:
                self._scorer_dropped = None
                try:
                    self._scorer = self._find_scorer(has_cells) or False
                except Exception as e:  # noqa: BLE001 - see above
                    log.warning("no re-ranking: %s: %s", type(e).__name__, e)
                    self._scorer = False
            return self._scorer or None

    def _find_scorer(self, has_cells: Callable[[str], bool]):
        from imgsearch.model.rerank import QueryScorer, ScorerLoadError

        try:
            version = self.version()
        except UserError:
            return None
        try:
            scorer = QueryScorer.load(version, threads=self.scorer_threads)
        except ScorerLoadError as e:
            if self._captioner is None:
                # exporting it again needs torch, which a query does not load: the next index run does it
                log.warning("%s; no re-ranking until it is exported again (the next index run does it)", e)
                self._scorer_dropped = e.path
                return None
            log.warning("%s; exporting it again", e)
            scorer = None
        if scorer is None and (self._captioner is not None or has_cells(version)):
            try:
                scorer = QueryScorer.for_captioner(self.captioner())
            except ModelError as e:
                log.warning("no re-ranking: %s", e)
        return scorer

    def export_scorer(self, has_cells: Callable[[str], bool]) -> None:
        """After an index run that loaded the captioner: (re)make the query scorer now, so that queries
        need no torch. Never fails the run: queries fall back to the fused order."""
        with self._lock:
            self._scorer = None
        try:
            self.scorer(has_cells)
        except Exception as e:  # noqa: BLE001 - an export failure of any kind must not fail the index run
            log.warning("query re-ranking unavailable: %s: %s", type(e).__name__, e)

    def scorer_cached(self, version: str) -> bool:
        """Whether the query scorer of ``version`` is in the cache (else the first query exports it)."""
        from imgsearch.files import cache_dir
        from imgsearch.model.rerank import scorer_path

        return scorer_path(version, cache_dir()).is_file()
