"""How a query's signals are fused and re-ranked: the tuned settings, in one place.

Chosen by Recall@K on Flickr8k dev with ``bench/tune_fusion.py`` (the table it printed is
``bench/results/tune_fusion_dev.txt``); change them only with a new run of it.

Signals: "bm25" — FTS/BM25 over captions + keywords + tags; "caption" — cosine of the query's MiniLM
embedding with each photo's caption vector (3-best captions + tags, text/caption_vectors.py); "image" —
cosine with the photo embedding (checkpoints with a projection head).
"""
from __future__ import annotations

from typing import Any

# Search modes and the signals each one uses. The mode "dense" is the signal "caption" (its public name).
MODES = ("hybrid", "bm25", "dense", "image", "labels")
MODE_SIGNALS: dict[str, tuple[str, ...]] = {
    "hybrid": ("bm25", "caption", "image"),
    "bm25": ("bm25",),
    "dense": ("caption",),
    "image": ("image",),
    "labels": ("labels",),           # the zero-shot label vector (model/labels.py)
}

FUSION: dict[str, Any] = {
    # z-score sum with these weights had the best R@1+R@5+R@10 of the 480 settings tried; 3.0 for the image
    # signal was kept over the marginally better 4.0 because the re-ranking below was tuned on it
    "method": "zsum",                # "rrf" | "sum" | "zsum" (see imgsearch.search.fuse)
    "k_rrf": 60,                     # (rrf only)
    "weights": {"bm25": 1.0, "caption": 0.25, "image": 3.0},
    "like_weights": {"caption": 1.0, "image": 1.0},    # query(like=photo): photo↔photo and caption↔caption
    "overfetch": 4,                  # candidates per list = max(k * overfetch, k + 20)
}

# Re-ranking of a hybrid query's fused top `depth` by the captioning decoder's log-likelihood of the
# query (imgsearch/model/rerank.py): score = z(fused) + weight * z(log P(query | photo)), z over those
# `depth` photos. Deeper costs proportionally more time for almost no recall.
RERANK: dict[str, Any] = {
    "depth": 30,
    "weight": 1.5,
}


def candidates(k: int) -> int:
    """How many photos each signal returns first for a query of ``k`` results (FUSION["overfetch"])."""
    return max(k * FUSION["overfetch"], k + 20)
