"""What a photo looks like, for query by example (``--like``): its mean-pooled head channels, projected.

The photo embedding (model/projection.py) is trained to say what the captions say, so two crops of one
photo, or two photos of the same vase, can be far apart in it when their captions would differ. The
encoder's own head channels — the ImageNet classifier's input, one per grid cell — describe the look:

    v = normalise(R · normalise(mean_cells(head)))        # (B, 49, 1280) → (B, 1280) → (B, 384)

``R`` is a fixed Gaussian random projection (1280 → 384, Johnson–Lindenstrauss: cosines are kept to about
±0.05), made from a seed with NumPy's legacy ``RandomState``, whose stream NumPy keeps stable across
versions, so no data file ships and every process makes the same matrix. 384 dimensions keep the vector
the size of the others (1.5 KB a photo, one more FAISS index of the same kind). A PCA basis did worse: fitted
on one dev set and applied to the other it lost 5–15 points of crop R@1 against the random projection, and
centring the channels did not help (bench/like_visual.py, bench/results/like_visual_dev.txt).

NumPy only: the query process computes it for an unindexed query photo from the encoder's grid.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from imgsearch.model.labels import HEAD_CHANNELS   # the grid's first channels: the classifier head's input
from imgsearch.text import EMBED_DIM

SEED = 20261201                # the projection's seed: a change is a new VISUAL_VERSION
VISUAL_VERSION = "meanhead-rp1"


@lru_cache(maxsize=1)
def projection() -> np.ndarray:
    """(HEAD_CHANNELS, EMBED_DIM) float32, read-only: the fixed random projection."""
    r = np.random.RandomState(SEED).standard_normal((HEAD_CHANNELS, EMBED_DIM)).astype(np.float32)
    r /= np.sqrt(EMBED_DIM)
    r.setflags(write=False)
    return r


def visual_vectors(head: np.ndarray) -> np.ndarray:
    """(B, 49, HEAD_CHANNELS) head channels → (B, EMBED_DIM) float32 L2-normalised visual vectors."""
    pooled = np.asarray(head, dtype=np.float32).mean(axis=1)                         # (B, 1280)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    v = pooled @ projection()                                                        # (B, 384)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
