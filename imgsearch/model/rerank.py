"""Caption-likelihood re-ranking: how likely is the captioner to *write the query* for a photo?

The first-stage signals (BM25 over captions, caption vectors, photo vectors) compare the query
with one short summary of each photo. The captioning decoder can do better for the few dozen
photos they put on top: it scores the query itself, word by word, against the photo's 7×7 grid,

    score(photo) = log P(query words | photo) = Σ_t log p(w_t | w_<t, grid)       (teacher forcing)

For one query the text prior log P(query) is the same for every candidate, so ranking candidates
by this log-likelihood ranks them by pointwise mutual information between query and photo — a
generic caption ("a man is standing") does not float to the top. (Captioners as retrieval
scorers: e.g. Tschannen et al. 2023, "Image captioners are scalable vision learners too".)

What is stored per photo (at index time, SQLite table photo_cells): the decoder's linear map of
the 49 grid cells, ``decoder.grid.proj(grid)`` (49, d_model) — the only part of the decoder that
reads the image — quantised to int8 with one float16 scale per cell (12.6 KB at d_model 256). The
pooled "global" cell the decoder also attends to is the mean of these (the map is linear), so
nothing else is needed to rebuild the decoder's memory exactly (up to the quantisation).

At query time a ``QueryScorer`` runs the decoder over the query tokens for K candidates in one
batch. The scorer graph is exported once to ONNX (from the checkpoint, when torch is loaded
anyway: at index time) and cached as

    <cache>/models/scorer-<checkpoint version>-s<GRAPH_VERSION>.onnx  (+ .json: vocabulary; + .sha256)

so a query needs neither torch nor the checkpoint; without the cache it falls back to torch once
and writes it. A cached graph that does not load (damaged, though its sidecar matches) is removed
(:class:`ScorerLoadError`): a process with the captioner loaded exports it again, a query goes on
without re-ranking (models.py).
"""
from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from imgsearch.errors import ModelError

GRAPH_VERSION = 2         # 2: per-token log-probabilities out (weighted in NumPy)
CELLS_MAGIC = b"C1"
log = logging.getLogger(__name__)


class ScorerLoadError(ModelError):
    """The cached query scorer verified but did not load; it has been removed (``path``)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


# ----------------------------------------------------------------------------- stored cells

def pack_cells(cells: np.ndarray) -> list[bytes]:
    """(B, N, D) float cells → one blob per photo: b"C1", uint16 N, uint16 D, float16 scales (N),
    int8 values (N × D). Symmetric per-cell quantisation: value ≈ int8 × scale."""
    x = np.asarray(cells, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"cells must be (B, N, D), not {x.shape}")
    B, N, D = x.shape
    scale = np.abs(x).max(-1) / 127.0                                   # (B, N)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float16)
    q = np.clip(np.rint(x / scale.astype(np.float32)[..., None]), -127, 127).astype(np.int8)
    head = CELLS_MAGIC + struct.pack("<HH", N, D)
    return [head + scale[b].astype("<f2").tobytes() + q[b].tobytes() for b in range(B)]


def unpack_cells(blobs: Sequence[bytes]) -> np.ndarray:
    """Blobs from ``pack_cells`` (same shape) → (K, N, D) float32."""
    if not blobs:
        return np.zeros((0, 0, 0), dtype=np.float32)
    out = []
    shape = None
    for b in blobs:
        b = bytes(b)
        if b[:2] != CELLS_MAGIC or len(b) < 6:
            raise ValueError("not a stored cell grid (bad header)")
        N, D = struct.unpack("<HH", b[2:6])
        if shape is None:
            shape = (N, D)
        if (N, D) != shape or len(b) != 6 + 2 * N + N * D:
            raise ValueError("stored cell grids differ in shape or are truncated")
        scale = np.frombuffer(b, dtype="<f2", count=N, offset=6).astype(np.float32)
        q = np.frombuffer(b, dtype=np.int8, count=N * D, offset=6 + 2 * N).reshape(N, D)
        out.append(q.astype(np.float32) * scale[:, None])
    return np.stack(out)


# ----------------------------------------------------------------------------- the scorer graph

def _scorer_module(decoder):
    """A torch module: (cells (K, N, D), tokens (K, T)) → (K, T-1) log-probabilities of tokens[:, 1:]
    (0 at pad = 0), computed by ``decoder`` (a TransformerDecoder, eval mode) from the stored cells.

    The same function as teacher-forcing the decoder, arranged for K candidates of one query:
    * the first layer's self-attention sees only the query's tokens — identical for every candidate —
      so it runs once (row 0) and is broadcast;
    * cross-attention reads the 50 memory cells through the key/value maps without materialising
      them: q·(W_k m + b_k) = (W_kᵀ q)·m + q·b_k, where q·b_k is the same for every cell and drops out
      of the softmax, and Σ_j a_j (W_v m_j + b_v) = W_v (Σ_j a_j m_j) + b_v. With T ≈ 12 query
      tokens against 50 cells this is ~2.5× fewer multiply-adds than projecting the cells.
    """
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    class CaptionLikelihood(nn.Module):
        def __init__(self, dec):
            super().__init__()
            self.dec = dec
            D = dec.cfg.d_model
            H = dec.cfg.n_heads
            self.h, self.dk = H, D // H
            wk, wvt, bv = [], [], []
            for layer in dec.layers:
                W, b = layer.cross_attn.kv.weight.detach(), layer.cross_attn.kv.bias.detach()   # (2D, D), (2D,)
                wk.append(W[:D].view(H, self.dk, D).contiguous())                          # (H, dk, D)
                wvt.append(W[D:].view(H, self.dk, D).transpose(1, 2).contiguous())         # (H, D, dk)
                bv.append(b[D:].view(H, 1, self.dk).contiguous())                          # (H, 1, dk)
            self.wk, self.wvt, self.bv = wk, wvt, bv

        def cross(self, x: torch.Tensor, i: int, mem: torch.Tensor) -> torch.Tensor:
            att = self.dec.layers[i].cross_attn
            K, T, _ = x.shape
            q = att.q(x).view(K, T, self.h, self.dk).transpose(1, 2)          # (K, H, T, dk)
            qk = (q @ self.wk[i]) * (1.0 / math.sqrt(self.dk))                 # (K, H, T, D)
            m = mem[:, None]                                                   # (K, 1, 50, D)
            a = torch.softmax(qk @ m.transpose(-1, -2), dim=-1)                # (K, H, T, 50)
            y = (a @ m) @ self.wvt[i] + self.bv[i]                             # (K, H, T, dk)
            return att.out(y.transpose(1, 2).reshape(K, T, self.h * self.dk))  # (K, T, D)

        def forward(self, cells: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            dec, g = self.dec, self.dec.grid
            x = torch.cat([cells.mean(1, keepdim=True), cells], dim=1)         # (K, 50, D): pooled cell first
            mem = g.norm(x + g.pos)                                            # (K, 50, D)
            inp = tokens[:, :-1]
            K = inp.shape[0]
            h = dec.embed_tokens(inp[:1])                                      # (1, T, D): same for every row
            h = dec.run_layers(h, lambda y, i: self.cross(y, i, mem), rows=K)  # (K, T, D)
            logits = dec.head(dec.ln_f(h))                                     # (K, T, V)
            lp = F.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]   # (K, T-1)
            return lp * (tokens[:, 1:] != 0).to(lp.dtype)                      # (K, T-1)

    return CaptionLikelihood(decoder).eval()


def supports(captioner) -> bool:
    """Whether the captioner's decoder can score queries from stored cells (the Transformer can)."""
    dec = getattr(captioner, "decoder", None)
    return hasattr(getattr(dec, "grid", None), "proj") and hasattr(dec, "run_layers")


def cells_from_grid(captioner, grid) -> np.ndarray:
    """(B, 49, C) encoder grid → (B, 49, d_model) float32 cells to store (torch in, NumPy out)."""
    import torch

    with torch.inference_mode():
        g = grid[..., :captioner.config.feat_dim].to(captioner.device).float()
        return captioner.decoder.grid.proj(g).float().cpu().numpy()


def scorer_path(version: str, cache_dir: str | Path) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in version)
    return Path(cache_dir) / "models" / f"scorer-{safe}-s{GRAPH_VERSION}.onnx"


def export_scorer(captioner, dest: Path, tolerance: float = 1e-3, quantize: bool = True) -> Path:
    """Export the captioner's query scorer to ONNX (dynamic K and T), check it against torch, and
    write it atomically with its vocabulary (.json) and SHA-256 (.sha256) beside it.

    ``quantize``: int8 weights with dynamic int8 activations for the matrix products (onnxruntime's
    quantize_dynamic): about 2× faster on a 2-core CPU, with log-likelihoods within ~0.4 nats of fp32
    (correlation 0.99998, on real cells)."""
    import contextlib
    import io
    import tempfile

    import onnxruntime as ort
    import torch

    from imgsearch.artifacts import export_torch, write_verified
    from imgsearch.files import atomic_write

    dec = captioner.decoder
    if next(dec.parameters()).device.type != "cpu":
        # export from a CPU copy: Module.cpu() moves in place, and the scorer module holds the captioner's own
        # decoder, so it would leave a CUDA captioner with its decoder on the CPU (and its wk/wv lists on CUDA)
        import copy

        dec = copy.deepcopy(dec).cpu()
    module = _scorer_module(dec)
    D = dec.cfg.d_model
    g = torch.Generator().manual_seed(7)
    cells = torch.randn(3, dec.cfg.n_cells, D, generator=g)
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 4, 5, 6, 7, 2]]) % dec.cfg.vocab_size
    data = export_torch(module, (cells, tokens), input_names=["cells", "tokens"], output_names=["token_logp"],
                        dynamic_axes={"cells": {0: "k"}, "tokens": {0: "k", 1: "t"}, "token_logp": {0: "k", 1: "t"}})
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"cells": cells.numpy(), "tokens": tokens.numpy()})[0]
    with torch.inference_mode():
        want = module(cells, tokens).numpy()
    err = float(np.abs(got - want).max())
    if not err <= tolerance * max(1.0, float(np.abs(want).max())):
        raise RuntimeError(f"exported scorer differs from PyTorch by {err:.2e}")
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmpdir, contextlib.redirect_stderr(io.StringIO()):
            src, out = Path(tmpdir) / "fp32.onnx", Path(tmpdir) / "int8.onnx"
            src.write_bytes(data)
            logging.disable(logging.WARNING)   # "consider pre-processing" advice on every call
            try:
                quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            data = out.read_bytes()
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        q = sess.run(None, {"cells": cells.numpy(), "tokens": tokens.numpy()})[0]
        # int8 may move each log-likelihood a little, but must keep them where they were
        qs, ws = q.sum(1), want.sum(1)
        if not (np.abs(qs - ws).max() <= 0.05 * max(1.0, float(np.abs(ws).max()))
                and list(np.argsort(qs)) == list(np.argsort(ws))):
            raise RuntimeError(f"int8 scorer strays from PyTorch: {qs} vs {ws}")
    info = {"version": captioner.version, "vocab": list(captioner.vocab.words), "max_len": captioner.config.max_len,
            "n_cells": dec.cfg.n_cells, "d_model": D}
    atomic_write(f"{dest}.json", json.dumps(info))
    return write_verified(dest, data)


def token_weights(vocab) -> np.ndarray:
    """Per vocabulary id, how much a query word counts in the likelihood: its inverse document frequency
    over the training captions (model/data/caption_idf.json), so "a", "is", "the" — which every photo
    predicts alike — weigh little and "dog", "red", "surfing" much; <end> counts 1, <pad>/<start>/<unk> 0;
    a word the file lacks counts as the rarest there. On Flickr8k dev this lifts re-ranked R@1/5/10 from
    0.249 / 0.559 / 0.693 (plain sum) to 0.259 / 0.573 / 0.699 (fp32, depth 40, weight 2)."""
    from importlib import resources

    data = json.loads((resources.files("imgsearch.model") / "data" / "caption_idf.json").read_text())
    idf = data["idf"]
    rare = max(idf.values())
    w = np.array([idf.get(word, rare) for word in vocab.words], dtype=np.float32)
    w[[vocab.pad, vocab.bos, vocab.unk]] = 0.0
    w[vocab.eos] = 1.0
    return w


class QueryScorer:
    """How likely the captioner is to write a query for each candidate photo, from their stored cells.

        scorer = QueryScorer.load(version)                  # cached ONNX graph (no torch)
        scorer = QueryScorer.for_captioner(captioner)       # export (or reuse) from a loaded captioner
        tokens = scorer.tokens("dog on the beach")          # None when no query word is in the vocabulary
        s = scorer.score(tokens, cells)                     # cells (K, 49, D) → (K,)

    ``score`` is Σ_t w(word_t) · log p(word_t | words before, photo), w from ``token_weights`` (IDF);
    ``score(..., weighted=False)`` the plain log-likelihood log P(query | photo).
    """

    def __init__(self, version: str, vocab, max_len: int, run):
        self.version, self.vocab, self.max_len, self._run = version, vocab, max_len, run
        self.weights = token_weights(vocab)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, version: str, cache_dir: str | Path | None = None, threads: int | None = None
             ) -> "QueryScorer | None":
        """The cached scorer of checkpoint ``version``, or None when there is none (or it does not verify).
        ScorerLoadError when it verifies but does not load: the file is removed first."""
        from imgsearch.artifacts import discard, load_error, ort_session, read_verified
        from imgsearch.files import cache_dir as default_cache

        from .vocab import Vocab

        path = scorer_path(version, cache_dir if cache_dir is not None else default_cache())
        if not path.is_file():
            return None
        try:
            info = json.loads(Path(f"{path}.json").read_text())
        except (OSError, ValueError):
            return None
        if read_verified(path) is None or info.get("version") != version:
            log.warning("cached query scorer %s is damaged: ignoring it", path)
            return None
        # worker threads spin within a run (many small ops) but stop when it ends: the next query's MiniLM
        # and BM25 need these cores (spinning on: scoring 9.5 ms but the next MiniLM 6 -> 10 ms; off: 12 ms).
        # Default: every core up to 4 (one query: 30 photos in 6.2 ms on 2 cores, 10.7 ms on one); the web
        # server asks for half (Models.scorer_threads): concurrent queries each score on their own core (2
        # threads per run cost a third more CPU per query on a busy 2-core machine: bench/serve_load.py)
        try:
            sess = ort_session(path, max(1, int(threads or min(4, os.cpu_count() or 1))),
                               config={"session.force_spinning_stop": "1"})
            vocab, max_len = Vocab(list(info["vocab"])), int(info["max_len"])
        # broad: onnxruntime's own exception types for a bad graph; KeyError/TypeError for a bad .json
        except Exception as e:  # noqa: BLE001
            discard(path, ".json")
            raise ScorerLoadError(f"cached query scorer {path} does not load ({load_error(e)}): removed it",
                                  path) from None
        return cls(version, vocab, max_len, lambda cells, tokens: sess.run(None, {"cells": cells, "tokens": tokens})[0])

    @classmethod
    def for_captioner(cls, captioner, cache_dir: str | Path | None = None) -> "QueryScorer | None":
        """From a loaded captioner: the cached ONNX scorer, exported first when missing; the torch
        decoder itself when exporting fails. None for decoders that cannot score (LSTM)."""
        if not supports(captioner):
            return None
        from imgsearch.files import cache_dir as default_cache

        cache = Path(cache_dir if cache_dir is not None else default_cache())
        try:
            got = cls.load(captioner.version, cache)
        except ScorerLoadError as e:
            log.warning("%s; exporting it again", e)
            got = None
        if got is not None:
            return got
        try:
            export_scorer(captioner, scorer_path(captioner.version, cache))
            got = cls.load(captioner.version, cache)
            if got is not None:
                return got
        # broad: whatever stops the export (read-only cache, no onnxruntime, exporter or onnxruntime errors of
        # their own types, a graph that strays) must fall back to scoring with torch, never fail the caller
        except Exception as e:
            log.warning("query scorer not exported (%s: %s); scoring with PyTorch", type(e).__name__, e)
        return cls.from_torch(captioner)

    @classmethod
    def from_torch(cls, captioner) -> "QueryScorer":
        import torch

        module = _scorer_module(captioner.decoder)
        device = captioner.device

        def run(cells, tokens):
            with torch.inference_mode():
                return module(torch.from_numpy(cells).to(device), torch.from_numpy(tokens).to(device)).cpu().numpy()

        return cls(captioner.version, captioner.vocab, captioner.config.max_len, run)

    # ------------------------------------------------------------------ scoring
    def tokens(self, text: str) -> np.ndarray | None:
        """<start> words <end> as (T,) int64, or None when no word of ``text`` is in the vocabulary
        (the likelihood would only compare how photos predict <unk>)."""
        ids = self.vocab.encode(text, self.max_len)
        if all(i == self.vocab.unk for i in ids[1:-1]):
            return None
        return np.asarray(ids, dtype=np.int64)

    def token_logp(self, tokens: np.ndarray, cells: np.ndarray, batch: int = 64) -> np.ndarray:
        """log p(token_t | tokens before, photo) for t ≥ 1, for each of the K photos: (K, T-1)."""
        cells = np.ascontiguousarray(cells, dtype=np.float32)
        K = len(cells)
        out = np.empty((K, len(tokens) - 1), dtype=np.float32)
        for s in range(0, K, batch):
            c = cells[s:s + batch]
            t = np.ascontiguousarray(np.broadcast_to(tokens, (len(c), len(tokens))))
            out[s:s + len(c)] = self._run(c, t)
        return out

    def score(self, tokens: np.ndarray, cells: np.ndarray, weighted: bool = True) -> np.ndarray:
        """(K,) scores of the query ``tokens`` for the K photos whose cells are given (see the class doc)."""
        lp = self.token_logp(tokens, cells)
        if not weighted:
            return lp.sum(1)
        return lp @ self.weights[np.asarray(tokens[1:])]


def rerank(ranked: list[tuple[int, float]], loglik: dict[int, float], depth: int, weight: float
           ) -> list[tuple[int, float]]:
    """Re-order the first ``depth`` entries of a fused ranking by z(fused score) + weight × z(log-likelihood).

    z-scores are taken over those ``depth`` entries; an entry without a likelihood (no stored cells)
    gets the mean (z = 0). Entries past ``depth`` keep their order below the re-ranked block: their
    score is mapped by the same z-transform, plus ``weight`` × the block's lowest likelihood z-score.
    """
    if depth <= 0 or weight <= 0 or len(ranked) < 2 or not loglik:
        return list(ranked)
    top, tail = ranked[:depth], ranked[depth:]
    f = np.array([s for _, s in top], dtype=np.float64)
    mu, sd = f.mean(), f.std()
    sd = sd if sd > 0 else 1.0
    have = [loglik[i] for i, _ in top if i in loglik]
    lmu, lsd = float(np.mean(have)), float(np.std(have))
    lsd = lsd if lsd > 0 else 1.0
    zl = {i: (loglik[i] - lmu) / lsd for i, _ in top if i in loglik}
    floor = min(0.0, min(zl.values()))
    block = [(i, (s - mu) / sd + weight * zl.get(i, 0.0)) for i, s in top]
    block.sort(key=lambda x: (-x[1], x[0]))
    rest = [(i, (s - mu) / sd + weight * floor) for i, s in tail]
    return block + rest
