"""Zero-shot labels: the encoder's own ImageNet classifier applied to every grid cell.

The photo-level classifier sees the mean of the 49 cells, so a small object (a remote, a tie, an umbrella)
is averaged away. Applied to each cell instead — softmax per cell, maximum over cells — the object's cell
gives it its probability:

    p = max_cells softmax(W · cell + b)                 # (B, 1000) from the (B, 49, 1280) head channels

Two things are made of ``p`` at index time:

* **labels**: the top ``TOP`` classes and their probabilities, packed (``pack`` / ``unpack``, 4 bytes a class),
  from which per-region tags are read (``region_tags``);
* **a label vector** in the MiniLM space: the probability-weighted mean of the MiniLM embeddings of the
  class texts ("a photo of a golden retriever"), normalised — ConSE (Norouzi et al., "Zero-Shot Learning by
  Convex Combination of Semantic Embeddings", 2014). A query's MiniLM vector is compared with it by cosine.

The class text vectors ship as package data (``data/imagenet_label_vectors.npy``, made by
``tools/make_label_vectors.py`` from the pinned MiniLM), so neither indexing nor a query embeds them.
NumPy only: the query process reads the class vectors too (to weigh the signal by how much a query is
about ImageNet's things), without torch.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from importlib import resources

import numpy as np

from imgsearch.text import EMBED_DIM

TOP = 20                       # classes kept per photo (and mixed into its label vector)
# A class seen this surely in some cell becomes a region tag (with its hypernyms), among the photo's top
# REGION_TOP classes. Per-cell softmax is overconfident (nearly every photo has five classes above 0.9 in some
# cell), so a region tag's class is named by the human captions less often than a photo-level tag's (0.10 vs
# 0.29 on Flickr8k dev, 0.17 vs 0.33 on coco_dev, about the same from 0.3 to 0.9); but captions name few of
# the objects in a photo, and for search the tags pay: BM25 short-query mAP on coco_dev 0.314 at 0.999 / top 3,
# 0.340 at 0.9, 0.390 at 0.5 / top 5 (bench/region_tags.py, bench/short_queries.py, bench/results/labels_dev.md)
REGION_THRESHOLD = 0.5
REGION_TOP = 5
# How labels, label vectors, region tags and the visual vector (model/visual.py: read off the same head channels,
# in the same pass) are made: a change re-labels every photo (decode + encoder, no re-captioning).
LABELS_VERSION = "cellmax3+meanhead-rp1"
HEAD_CHANNELS = 1280           # the grid's first channels: the classifier head's input, per cell
_MAGIC = b"L1"


@lru_cache(maxsize=1)
def class_vectors() -> np.ndarray:
    """(1000, EMBED_DIM) float32, L2-normalised MiniLM embeddings of the class texts (package data)."""
    with resources.files("imgsearch.model").joinpath("data/imagenet_label_vectors.npy").open("rb") as f:
        v = np.load(f, allow_pickle=False).astype(np.float32)
    if v.shape != (1000, EMBED_DIM):
        raise ValueError(f"imagenet_label_vectors.npy has shape {v.shape}, expected (1000, {EMBED_DIM})")
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v.setflags(write=False)
    return v


def cell_probs(head: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(B, 49, 1280) head channels, the classifier's (1000, 1280) weight and (1000,) bias →
    (B, 1000) float32: per class, its highest probability in any cell."""
    logits = head.astype(np.float32) @ weight.T.astype(np.float32) + bias.astype(np.float32)   # (B, 49, 1000)
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits.max(axis=1)                                                                # (B, 1000)


def top_labels(probs: np.ndarray, top: int = TOP) -> tuple[np.ndarray, np.ndarray]:
    """(B, 1000) → class ids (B, top) and their probabilities (B, top), most probable first."""
    idx = np.argpartition(-probs, top - 1, axis=1)[:, :top]
    p = np.take_along_axis(probs, idx, 1)
    order = np.argsort(-p, axis=1, kind="stable")
    return np.take_along_axis(idx, order, 1), np.take_along_axis(p, order, 1)


def label_vectors(ids: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(B, top) class ids and probabilities → (B, EMBED_DIM) float32 L2-normalised label vectors."""
    v = np.einsum("bk,bkd->bd", probs.astype(np.float32), class_vectors()[ids])
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def pack(ids: np.ndarray, probs: np.ndarray) -> bytes:
    """One photo's top classes as bytes: b"L1", count, then (uint16 id, float16 probability) pairs."""
    n = len(ids)
    return _MAGIC + struct.pack("<H", n) + np.asarray(ids, "<u2").tobytes() + np.asarray(probs, "<f2").tobytes()


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, probabilities) of a packed blob; ValueError if it is not one."""
    if len(blob) < 4 or blob[:2] != _MAGIC:
        raise ValueError("not a packed label list")
    (n,) = struct.unpack("<H", blob[2:4])
    if len(blob) != 4 + 4 * n:
        raise ValueError("truncated label list")
    ids = np.frombuffer(blob, "<u2", n, 4).astype(np.int64)
    return ids, np.frombuffer(blob, "<f2", n, 4 + 2 * n).astype(np.float32)


def region_tags(ids: np.ndarray, probs: np.ndarray, threshold: float = REGION_THRESHOLD,
                top: int = REGION_TOP) -> list[tuple[str, float]]:
    """Tags read off one photo's top classes: the names of at most ``top`` classes of probability ≥
    ``threshold`` and their WordNet hypernyms (each scored by the best class reaching it), most sure first.
    Hypernyms are not summed over classes as the photo-level tags are: per-cell maxima of many classes
    would add up to a hypernym no cell shows."""
    from imgsearch.model.tags import load_tag_table

    table = load_tag_table()
    best: dict[str, float] = {}
    for c, p in zip(ids[:top].tolist(), probs[:top].tolist()):
        if p < threshold:
            break
        for term in (table.names[c], *table.hypernyms[c]):
            best[term] = max(best.get(term, 0.0), float(p))
    return sorted(best.items(), key=lambda t: (-round(t[1], 9), table.breadth[t[0]], t[0]))


def dense_probs(ids: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """A photo's (1000,) probability row from its top classes (the others 0)."""
    row = np.zeros(1000, dtype=np.float32)
    row[ids] = probs
    return row


def query_affinity(qvec: np.ndarray) -> float:
    """How much a query is about one of ImageNet's things: its highest cosine with a class text."""
    return float(np.max(class_vectors() @ np.asarray(qvec, dtype=np.float32)))
