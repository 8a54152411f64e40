"""The Captioner: one value holding everything that turns images into descriptions —
the frozen encoder, the trained decoder, its vocabulary and (optionally) the photo→text
projection — together with the device they run on. No globals: load one and pass it around."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from imgsearch.devices import resolve_device  # noqa: F401  (also imported from here: model/train.py, others)
from imgsearch.errors import ModelError
from imgsearch.files import atomic_open

from . import rerank
from .beam import beam_search, greedy
from .decoder import DecoderConfig, build_decoder
from .encoder import ENCODERS, ImageEncoder, load_encoder
from .versions import DESCRIPTION_FORMAT, SHIPPED_NAME, checkpoint_version, shipped_checkpoint  # noqa: F401
from .vocab import Vocab

CHECKPOINT_FORMAT = "imgsearch-captioner"
CHECKPOINT_VERSION = 1


class CheckpointError(ModelError, RuntimeError):
    """A checkpoint cannot be used: missing, corrupt, or written by an incompatible version."""


@dataclass
class Description:
    captions: list[tuple[str, float]]          # n-best, best first: (text, length-normalised log-prob)
    tags: list[tuple[str, float]]              # ImageNet classes and their hypernyms: (word, confidence)
    keywords: list[str]                        # content words of the captions, then tag words
    image_embedding: np.ndarray | None = None  # (384,) photo embedding in MiniLM space, when the checkpoint has a projection
    cells: bytes | None = None                 # the decoder's grid cells, packed (model/rerank.py), Transformer decoders
    labels: bytes | None = None                # top ImageNet classes by their best grid cell, packed (model/labels.py)
    label_embedding: np.ndarray | None = None  # (384,) zero-shot label vector in MiniLM space (model/labels.py)
    region_tags: list[tuple[str, float]] = field(default_factory=list)   # tags read off the labels, minus ``tags``
    visual_embedding: np.ndarray | None = None # (384,) what the photo looks like: pooled head channels (model/visual.py)

    @property
    def caption(self) -> str:
        return self.captions[0][0] if self.captions else ""


@dataclass
class Captioner:
    encoder: ImageEncoder
    decoder: torch.nn.Module
    vocab: Vocab
    config: DecoderConfig
    version: str
    resize: str = "squash"
    projection: torch.nn.Module | None = None
    tag_threshold: float = 0.25
    info: dict = field(default_factory=dict)
    alpha: float = 0.7             # beam search length normalisation: score = log p / length ** alpha
    no_repeat_ngram: int = 2       # beam search never repeats a word pair (best dev CIDEr of 0, 2, 3)
    encoder_backend: str = "auto"  # CPU: "auto" = ONNX Runtime when it can be built (model/encoder_onnx.py), "torch"
    _onnx_encoder: object = field(default=None, repr=False, compare=False)
    _label_head: object = field(default=None, repr=False, compare=False)      # the classifier's (weight, bias), NumPy

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def image_size(self) -> int:
        return self.encoder.spec.image_size

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "auto") -> "Captioner":
        dev = resolve_device(device)   # first: a machine without the asked-for GPU fails before reading 25 MB
        path = Path(path) if path is not None else shipped_checkpoint()
        ckpt = read_checkpoint(path)
        return cls.from_checkpoint(ckpt, dev, version=checkpoint_version(path))

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: torch.device, version: str, encoder: ImageEncoder | None = None):
        try:
            cfg = DecoderConfig(**ckpt["config"])
            vocab = Vocab(list(ckpt["vocab"]))
            decoder = build_decoder(cfg)
            decoder.load_state_dict({k: v.float() for k, v in ckpt["decoder"].items()}, strict=True)
            projection = None
            if ckpt.get("projection"):
                from .projection import ProjectionConfig, build_projection
                pcfg = ProjectionConfig(**ckpt["projection"]["config"])
                projection = build_projection(pcfg)
                projection.load_state_dict({k: v.float() for k, v in ckpt["projection"]["state"].items()}, strict=True)
                projection.eval().to(device)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not match this version of imgsearch: {e}") from e
        enc_name = ckpt.get("encoder", "lite0")
        if encoder is None:
            encoder = load_encoder(enc_name, device)
        decoder.eval().to(device)
        return cls(encoder, decoder, vocab, cfg, version, ckpt.get("resize", "squash"), projection,
                   info=dict(ckpt.get("info", {})))

    @classmethod
    def tiny(cls, seed: int = 0, device: str | torch.device = "cpu", words: list[str] | None = None) -> "Captioner":
        """A small untrained captioner (real encoder, random decoder) for tests."""
        torch.manual_seed(seed)
        words = words or "a dog cat red blue green circle square on the grass beach man woman".split()
        vocab = Vocab(list(Vocab.build([" ".join(words)], min_count=1).words))
        cfg = DecoderConfig(vocab_size=len(vocab), d_model=32, hidden=64, n_layers=1, n_heads=2, dropout=0.0, max_len=8)
        decoder = build_decoder(cfg).eval()
        digest = hashlib.sha256()   # the version names these weights: caches keyed by it never mix two tiny models
        for name, t in sorted(decoder.state_dict().items()):
            digest.update(name.encode() + t.detach().cpu().numpy().tobytes())
        return cls(load_encoder("lite0", resolve_device(device)), decoder.to(resolve_device(device)), vocab, cfg,
                   version=f"tiny-{seed}-{digest.hexdigest()[:12]}")

    # ------------------------------------------------------------------ saving
    def checkpoint(self, half: bool = False, info: dict | None = None) -> dict:
        cast = (lambda t: t.half()) if half else (lambda t: t)
        ck = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "encoder": next(k for k, s in ENCODERS.items() if s == self.encoder.spec),
            "resize": self.resize,
            "config": self.config.to_dict(),
            "vocab": list(self.vocab.words),
            "decoder": {k: cast(v.detach().cpu()) for k, v in self.decoder.state_dict().items()},
            "info": dict(info if info is not None else self.info),
        }
        if self.projection is not None:
            ck["projection"] = {"config": self.projection.cfg.to_dict(),
                                "state": {k: cast(v.detach().cpu()) for k, v in self.projection.state_dict().items()}}
        return ck

    def save(self, path: str | Path, half: bool = False, info: dict | None = None) -> Path:
        path = Path(path)
        with atomic_open(path, "wb") as f:   # a reader (or a crash) sees the old checkpoint or the whole new one
            torch.save(self.checkpoint(half, info), f)
        return path

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            fast = self._cpu_encoder()
            if fast is not None:
                return fast(images)
            images = images.contiguous(memory_format=torch.channels_last)
            return self.encoder(images)
        with torch.autocast("cuda", dtype=torch.float16):
            grid, logits = self.encoder(images)
        return grid.float(), logits.float()

    def _cpu_encoder(self):
        """The ONNX Runtime encoder (built once, cached on disk), or None for PyTorch: when
        ``encoder_backend`` or $IMGSEARCH_ENCODER says "torch", or the ONNX one cannot be built."""
        import os

        backend = os.environ.get("IMGSEARCH_ENCODER", self.encoder_backend)
        if backend == "torch" or self._onnx_encoder is False:
            return None
        if self._onnx_encoder is None:
            try:
                from .encoder_onnx import OnnxImageEncoder

                self._onnx_encoder = OnnxImageEncoder.for_encoder(self.encoder)
            except Exception as e:  # no onnxruntime, export failure, mismatch: PyTorch it is
                import logging

                logging.getLogger(__name__).warning("ONNX encoder unavailable (%s: %s); using PyTorch",
                                                    type(e).__name__, e)
                self._onnx_encoder = False
                return None
        return self._onnx_encoder

    @torch.inference_mode()
    def captions_from_grid(self, grid: torch.Tensor, beam: int = 3, n_best: int | None = None,
                           alpha: float | None = None, no_repeat_ngram: int | None = None
                           ) -> list[list[tuple[str, float]]]:
        """(B, 49, C) grid → n-best captions per image."""
        grid = grid[..., :self.config.feat_dim].to(self.device).float()   # the head channels
        memory = self.decoder.encode_memory(grid)
        banned = (self.vocab.pad, self.vocab.bos, self.vocab.unk)
        if beam == 0:  # plain greedy decoding, used by quick dev evaluation
            seqs = greedy(self.decoder, memory, grid.shape[0], self.vocab.bos, self.vocab.eos,
                          self.config.max_len, banned=banned)
            return [[(self.vocab.decode(s), 0.0)] for s in seqs]
        hyps = beam_search(self.decoder, memory, grid.shape[0], self.vocab.bos, self.vocab.eos, beam=beam,
                           max_len=self.config.max_len, alpha=self.alpha if alpha is None else alpha,
                           n_best=n_best, banned=banned,
                           no_repeat_ngram=self.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram)
        return [[(self.vocab.decode(h.tokens), round(h.score, 6)) for h in hs] for hs in hyps]

    @torch.inference_mode()
    def describe(self, images: torch.Tensor, beam: int = 3, n_best: int | None = 3) -> list[Description]:
        """(B, 3, 224, 224) normalised images → one Description per image."""
        from imgsearch.text.normalize import keywords
        from .tags import tags_from_logits

        if images.shape[0] == 0:
            return []
        grid, logits = self.encode(images)
        caps = self.captions_from_grid(grid, beam=beam, n_best=n_best)
        tags = tags_from_logits(logits.float().cpu().numpy(), threshold=self.tag_threshold)
        emb = self.embed_images(grid) if self.projection is not None else None
        cells = None
        if rerank.supports(self):
            cells = rerank.pack_cells(rerank.cells_from_grid(self, grid))
        found = self.labels_from_grid(grid)
        out = []
        for i in range(len(caps)):
            kw = keywords([c for c, _ in caps[i]] + [t for t, _ in tags[i]])
            packed, vec, region, visual = found[i]
            have = {t for t, _ in tags[i]}
            out.append(Description(caps[i], tags[i], kw, None if emb is None else emb[i],
                                   None if cells is None else cells[i], packed, vec,
                                   [(t, sc) for t, sc in region if t not in have], visual))
        return out

    def labels_from_grid(self, grid: torch.Tensor) -> list[tuple[bytes, np.ndarray, list[tuple[str, float]],
                                                                 np.ndarray]]:
        """(B, 49, C) grid → per photo what its head channels say without the decoder: (packed top classes,
        label vector, region tags) (model/labels.py) and its visual vector (model/visual.py)."""
        from . import labels, visual

        if self._label_head is None:
            fc = self.encoder.net._fc
            self._label_head = (fc.weight.detach().float().cpu().numpy(), fc.bias.detach().float().cpu().numpy())
        head = grid[..., :labels.HEAD_CHANNELS].float().cpu().numpy()          # (B, 49, 1280)
        ids, probs = labels.top_labels(labels.cell_probs(head, *self._label_head))
        vecs = labels.label_vectors(ids, probs)                                 # (B, 384)
        looks = visual.visual_vectors(head)                                      # (B, 384)
        return [(labels.pack(i, p), v, labels.region_tags(i, p), lk) for i, p, v, lk in zip(ids, probs, vecs, looks)]

    @torch.inference_mode()
    def embed_images(self, grid: torch.Tensor) -> np.ndarray:
        """(B, 49, C) grid → (B, 384) L2-normalised photo embeddings in MiniLM space."""
        if self.projection is None:
            raise RuntimeError("this checkpoint has no photo→text projection")
        z = self.projection(grid[..., :self.projection.cfg.feat_dim].to(self.device).float())
        return torch.nn.functional.normalize(z, dim=-1).cpu().numpy().astype(np.float32)


def read_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint file; every failure is a CheckpointError with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt pickles/zips
        raise CheckpointError(f"{path} is not a readable imgsearch checkpoint (corrupt or truncated?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an imgsearch captioner checkpoint")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by checkpoint format {ckpt.get('format_version')!r}; "
                              f"this imgsearch reads format {CHECKPOINT_VERSION}. Retrain or upgrade imgsearch.")
    return ckpt
