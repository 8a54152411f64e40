""""Nothing found": whether a photo is relevant to a text query at all, on an absolute scale.

Fused scores only rank the photos of one query (z-scores are relative to that query's lists), so the
cut-off is not made on them but on a photo's *relevance*, a number in [0, 1] that means the same for
every query (settings.RELEVANCE):

- 0 for every photo when the query has no content word (only stop words, punctuation, emoji) or no word
  that MiniLM's vocabulary, the captioner's training captions or the library's own captions, keywords
  and tags know (random letters): such a query finds nothing in any mode;
- 1 when the query's words match the photo's captions, keywords or tags (the photo is in the query's BM25
  list, in hybrid and bm25 mode);
- else the best cosine of the query with the photo's vectors the mode uses (caption vector in dense mode,
  photo embedding in image mode, both in hybrid), at least 0. A photo missing from a signal's list of
  the query is given that list's lowest cosine (an upper bound of its own), so the cut depends only on
  the query, never on k.

A search keeps the photos whose relevance is >= ``min_score``; 0 or less keeps everything and turns the
word checks off too, as before. The default (None) is RELEVANCE["min_score"] for a library described by the
checkpoint it was calibrated on, the shipped one (cosines are on that model's scale: another checkpoint's
photo embeddings need a bar of their own), else no cosine bar but the word checks. It was chosen on
Flickr8k dev and coco_dev (5,400 caption queries) as the highest bar that costs no mode more than 0.005 of
R@10 on either set.
"""
from __future__ import annotations

import functools
import json
import math
from importlib import resources
from typing import Callable, Iterable, Mapping

from imgsearch.errors import UserError
from imgsearch.search.settings import RELEVANCE
from imgsearch.text.normalize import STOPWORDS, tokenize

Ranked = list[tuple[int, float]]


def bar(min_score: float | None) -> float:
    """The relevance bar of a query: ``min_score``, or the calibrated default when None."""
    if min_score is None:
        return float(RELEVANCE["min_score"])
    try:
        value = float(min_score)
    except (TypeError, ValueError):
        raise UserError(f"min_score must be a number, not {min_score!r}") from None
    if math.isnan(value):
        raise UserError("min_score must be a number, not NaN")
    return value


def calibrated(store) -> bool:
    """Whether the library has photos described by the checkpoint the default bar was calibrated on (the
    shipped one, whatever extra fields its description format adds)."""
    from sqlalchemy import select

    from imgsearch.model.versions import DESCRIPTION_FORMAT, checkpoint_version, shipped_checkpoint
    from imgsearch.store.models import Photo

    try:
        version = checkpoint_version(shipped_checkpoint())
    except OSError:                                      # no shipped weights in this installation
        return False
    prefix = version[:-len(DESCRIPTION_FORMAT)] if DESCRIPTION_FORMAT and version.endswith(DESCRIPTION_FORMAT) \
        else version
    with store.session() as s:
        return s.execute(select(Photo.id).where(Photo.model_version.startswith(prefix, autoescape=True),
                                                Photo.error.is_(None)).limit(1)).first() is not None


def content_words(text: str) -> list[str]:
    """The query's words that are not stop words (unstemmed; emoji and punctuation are no words)."""
    return [w for w in tokenize(text or "") if w not in STOPWORDS]


@functools.lru_cache(maxsize=1)
def _caption_words() -> frozenset[str]:
    """The words of the captioner's training captions (model/data/caption_idf.json)."""
    data = json.loads((resources.files("imgsearch.model") / "data" / "caption_idf.json").read_text("utf-8"))
    return frozenset(data["idf"])


def in_lexicon(words: Iterable[str], tokenize_ids: Callable[[list[str]], list[list[int]]] | None) -> bool:
    """Whether one of ``words`` is a word of the captioner's training captions or a whole word of the text
    embedder's vocabulary (``tokenize_ids``: TextEmbedder.tokenize; a known word is one token)."""
    words = list(words)
    if any(w in _caption_words() for w in words):
        return True
    if tokenize_ids is None or not words:
        return False
    base = len(tokenize_ids([""])[0])                  # [CLS] [SEP]
    return any(len(ids) == base + 1 for ids in tokenize_ids(words))


def counted(mode_signals: Iterable[str]) -> dict[str, str]:
    """{signal: "match" | "cosine"} of the signals of a mode that count for relevance."""
    kinds = RELEVANCE["signals"]
    return {s: kinds[s] for s in mode_signals if s in kinds}


def cut(ranked: Ranked, lists: Mapping[str, Ranked], n: int, kinds: Mapping[str, str], min_score: float) -> Ranked:
    """``ranked`` without the photos whose relevance (module doc) is below ``min_score``. ``lists``: the
    per-signal lists ``ranked`` was fused from, each asked for its top ``n``."""
    if min_score <= 0 or not kinds:
        return list(ranked)
    values: list[dict[int, float]] = []
    floors: list[float | None] = []
    for name, kind in kinds.items():
        lst = lists.get(name) or []
        if kind == "match":                              # a match within the query's BM25 list
            values.append({i: 1.0 for i, _ in lst})
            floors.append(None)
        else:
            values.append({i: float(s) for i, s in lst})
            floors.append(min((float(s) for _, s in lst), default=None) if len(lst) >= n else None)
    keep = []
    for i, s in ranked:
        rel = max((v[i] if i in v else (f if f is not None else 0.0) for v, f in zip(values, floors)), default=0.0)
        if max(rel, 0.0) >= min_score:
            keep.append((i, s))
    return keep


def exhausted(lists: Mapping[str, Ranked], n: int, kinds: Mapping[str, str], min_score: float) -> bool:
    """True when no photo past these lists (each asked for its top ``n``) can reach ``min_score``: every
    counted signal has given all it has, or (a cosine) its last photo is already below the bar."""
    if min_score <= 0 or not kinds:
        return False
    for name, kind in kinds.items():
        lst = lists.get(name) or []
        if len(lst) < n:
            continue
        if kind == "match" or min(float(s) for _, s in lst) >= min_score:
            return False
    return True
