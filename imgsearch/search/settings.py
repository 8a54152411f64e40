"""How a query's signals are fused and re-ranked: the tuned settings, in one place.

Chosen by Recall@K on Flickr8k dev with ``bench/tune_fusion.py`` (the table it printed is
``bench/results/tune_fusion_dev.txt``); change them only with a new run of it.

Signals: "bm25" — FTS/BM25 over captions + keywords + tags; "caption" — cosine of the query's MiniLM
embedding with each photo's caption vector (3-best captions + tags, text/caption_vectors.py); "image" —
cosine with the photo embedding (checkpoints with a projection head); "text" — BM25 over the text read in the
photos (OCR, indexer/ocr.py), its own FTS5 table (search/bm25.OCR_TABLE).
"""
from __future__ import annotations

from typing import Any

# Search modes and the signals each one uses. The mode "dense" is the signal "caption" (its public name).
MODES = ("hybrid", "bm25", "dense", "image", "labels", "text")
MODE_SIGNALS: dict[str, tuple[str, ...]] = {
    "hybrid": ("bm25", "caption", "image", "labels", "text"),
    "bm25": ("bm25",),
    "dense": ("caption",),
    "image": ("image",),
    "labels": ("labels",),           # the zero-shot label vector (model/labels.py)
    "text": ("text",),               # the text read in the photos (OCR: index --ocr)
}

FUSION: dict[str, Any] = {
    # z-score sum over each signal's top `depth`: these weights were among the best R@1+R@5+R@10 of the 480
    # settings tried and the best re-ranked (below). BM25 was 1.0 when the lists were 40 deep; over 100 its
    # z-scores spread more (a few strong word matches), and 0.5 gives the re-ranked hybrid back its R@K
    "method": "zsum",                # "rrf" | "sum" | "zsum" (see imgsearch.search.fuse)
    "k_rrf": 60,                     # (rrf only)
    "weights": {"bm25": 0.5, "caption": 0.25, "image": 3.0, "text": 3.0},
    # the text read in a photo (OCR) is what it says, not a guess: as strong as the photo embedding. No dev set
    # has text in its photos, so this is not tuned (tests/test_ocr.py: a word only the text has comes first).
    # A photo missing from a word list (BM25 over captions/tags/places, or the text) scores 0 there — it has
    # none of the query's words, or fewer than the 100th match — not the list's lowest z-score. Else a rare
    # word's few matches, scored alike, get z = 0 and the same fill as everyone: the word counts for nothing
    # ("paris" with 4 Paris photos among 14 put two others in the top 3). Measured with bm25 added
    # (bench/short_queries.py, bench/sentence_queries.py; bench/results/zero_fill_dev.txt): short-query mAP
    # coco_dev 0.554 -> 0.578, Flickr8k dev 0.222 -> 0.226; sentence R@1/5/10 coco_dev 0.502/0.823/0.892 ->
    # 0.517/0.833/0.897 (R@1 both halves up), Flickr8k dev 0.265/0.579/0.705 -> 0.266/0.578/0.705
    "zero_fill": ("bm25", "text"),
    # the label signal's weight depends on the query (label_weight below): it helps queries about the things
    # ImageNet has classes for and hurts queries about people and actions (bench/tune_labels.py)
    "labels": {"weight": 2.0, "lo": 0.3, "hi": 0.8},
    # query(like=photo): caption↔caption, photo↔photo, labels↔labels, and what the photos look like
    # (model/visual.py); chosen by bench/like_queries.py (crops) and bench/like_visual.py (crops and photos
    # of the same things): visual 1.5 lifted crop R@1 on both dev sets and both halves and never lowered
    # same-thing mAP; 1.0-2.0 is a plateau, 1.5 its middle (bench/results/like_visual_dev.txt)
    "like_weights": {"caption": 1.0, "image": 2.0, "labels": 0.5, "visual": 1.5},
    # photos each signal contributes to the fused ranking, whatever k: z-scores, the fill for a photo missing
    # from a list and the re-ranked top are computed from these lists only, so the first n results of
    # k=n are the first n of any larger k. Past them come the fusion of the lists 4x deeper (then 16x...),
    # appended below, never interleaved (search/engine.py)
    "depth": 100,
}

# Re-ranking of a hybrid query's fused top `depth` by the captioning decoder's log-likelihood of the
# query (imgsearch/model/rerank.py): score = z(fused) + weight * z(log P(query | photo)), z over those
# `depth` photos. Deeper costs proportionally more time for almost no recall.
RERANK: dict[str, Any] = {
    "depth": 30,
    "weight": 1.5,
    # the re-ranker is the Flickr8k captioner: it helps sentences about people and actions and hurts single
    # words and queries about things it never learnt to name, so its weight depends on the query
    # (rerank_weight below; bench/results/labels_dev.md)
    "min_words": 2,                  # fewer content words: no re-ranking
    "label_damp": 0.5,               # the weight shrinks by this share of the label signal's (0: not at all)
}


# "Nothing found" (search/relevance.py): a text query keeps a photo only when its relevance, an absolute
# number in [0, 1], is >= min_score. Relevance is 1 for a BM25 match (a query word in the photo's
# captions, keywords or tags), else the best cosine of the query with the photo's vectors of the signals
# listed as "cosine" (at least 0); 0 for every photo when the query has no word any model or the library
# knows. Signals not listed here do not count; a mode with none of them is not cut.
RELEVANCE: dict[str, Any] = {
    "min_score": 0.1,                # the default bar, chosen on Flickr8k dev + coco_dev (see the module doc)
    "signals": {"bm25": "match", "caption": "cosine", "image": "cosine", "text": "match"},
}


def label_weight(affinity: float) -> float:
    """The label signal's fusion weight for a query whose best cosine with a class text is ``affinity``
    (model/labels.query_affinity): 0 up to FUSION["labels"]["lo"], rising linearly to its full weight at "hi"."""
    c = FUSION["labels"]
    return float(c["weight"]) * min(1.0, max(0.0, (affinity - c["lo"]) / (c["hi"] - c["lo"])))


def rerank_weight(text: str, labels_weight: float) -> float:
    """The re-ranking weight for a query: 0 for fewer than RERANK["min_words"] content words, else
    RERANK["weight"] shrunk by the query's label weight (label_weight) as a share of its full weight: the
    more a query is about ImageNet's things, the less the Flickr8k captioner's opinion counts."""
    from imgsearch.text.normalize import search_terms

    if len(search_terms(text)) < int(RERANK["min_words"]):
        return 0.0
    full = float(FUSION["labels"]["weight"])
    share = labels_weight / full if full > 0 else 0.0
    return float(RERANK["weight"]) * (1.0 - float(RERANK["label_damp"]) * share)
