"""Fuse ranked result lists (BM25, caption vectors, image vectors, ...) into one ranking.

    fuse({"bm25": [(id, score), ...], "dense": [...]}, {"bm25": 1.0, "dense": 1.0}, method="rrf")

method="rrf": reciprocal rank fusion, score(id) = sum_l w_l / (k_rrf + rank_l(id)), ranks from 1.
method="sum": weighted sum of per-list min-max-normalised scores (a list whose scores are all equal
              gives each of its ids 1.0).
method="zsum": weighted sum of per-list z-scores ((s - mean) / std over the list's entries; a list of
              equal scores gives 0); an id missing from a list gets that list's lowest z-score — it
              ranks below everything the list returned, but a strong score elsewhere can still win.
Each list is read as "higher score = better" and re-sorted by (score desc, id asc), so its own order
does not matter; a repeated id keeps its best entry; entries with NaN/inf scores are ignored. An id
present in only one list still appears. Lists that are missing, None or empty, or whose weight is
<= 0, contribute nothing (a weight not given is 1.0). Result: [(id, score)] by score desc, ties by
id asc (deterministic: lists are summed in name order), truncated to `k` when given.

A query's lists are fused by ``fuse_lists`` with the shipped settings (settings.FUSION: method, weights, the
zero fill of BM25 and OCR text), and a text + like query's weights come from ``combined_weights``.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from imgsearch.search.settings import FUSION

__all__ = ["fuse", "fuse_lists", "combined_weights", "METHODS"]
Ranked = list[tuple[int, float]]     # (photo id, score), best first

METHODS = ("rrf", "sum", "zsum")


def _clean(lst: Iterable | None) -> list[tuple[int, float]]:
    if lst is None:
        return []
    best: dict[int, float] = {}
    for item in lst:
        i, s = item[0], item[1]
        s = float(s)
        if not math.isfinite(s):
            continue
        i = int(i)
        if i not in best or s > best[i]:
            best[i] = s
    return sorted(best.items(), key=lambda x: (-x[1], x[0]))


def fuse(ranked_lists: Mapping[str, Iterable | None], weights: Mapping[str, float] | None = None,
         method: str = "rrf", k_rrf: float = 60, k: int | None = None) -> list[tuple[int, float]]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if k_rrf < 0:
        raise ValueError("k_rrf must be >= 0")
    weights = weights or {}
    total: dict[int, float] = {}
    if method == "zsum":
        return _zsum(ranked_lists, weights, k)
    for name, lst in sorted((ranked_lists or {}).items(), key=lambda kv: str(kv[0])):  # fixed summation order
        w = float(weights.get(name, 1.0))
        if not (w > 0):
            continue
        items = _clean(lst)
        if not items:
            continue
        if method == "rrf":
            for rank, (i, _) in enumerate(items, start=1):
                total[i] = total.get(i, 0.0) + w / (k_rrf + rank)
        else:
            hi, lo = items[0][1], items[-1][1]
            span = hi - lo
            for i, s in items:
                norm = (s - lo) / span if span > 0 else 1.0
                total[i] = total.get(i, 0.0) + w * norm
    out = sorted(total.items(), key=lambda x: (-x[1], x[0]))
    return out[:k] if k is not None else out


def _zsum(ranked_lists, weights, k):
    lists = []
    for name, lst in sorted((ranked_lists or {}).items(), key=lambda kv: str(kv[0])):
        w = float(weights.get(name, 1.0))
        items = _clean(lst)
        if not (w > 0) or not items:
            continue
        n = len(items)
        mean = sum(s for _, s in items) / n
        std = math.sqrt(sum((s - mean) ** 2 for _, s in items) / n)
        z = {i: ((s - mean) / std if std > 0 else 0.0) for i, s in items}
        lists.append((w, z, min(z.values())))
    ids = sorted({i for _, z, _ in lists for i in z})
    total = {i: sum(w * z.get(i, floor) for w, z, floor in lists) for i in ids}
    out = sorted(total.items(), key=lambda x: (-x[1], x[0]))
    return out[:k] if k is not None else out


def fuse_lists(lists: dict[str, Ranked], weights: dict[str, float]) -> Ranked:
    """One ranked list: a single signal keeps its own scores (BM25, or cosine); several are fused per FUSION."""
    if not lists:
        return []
    if len(lists) == 1:
        return next(iter(lists.values()))
    zero = [name for name in FUSION.get("zero_fill", ()) if name in lists]
    if zero:   # a photo without the query's words in its text scores 0 there (settings.FUSION["zero_fill"])
        every = {i for lst in lists.values() for i, _ in lst}
        lists = dict(lists)
        for name in zero:
            have = {i for i, _ in lists[name]}
            lists[name] = list(lists[name]) + [(i, 0.0) for i in sorted(every - have)]
    return fuse(lists, {name: weights.get(name, 1.0) for name in lists}, method=FUSION["method"],
                k_rrf=FUSION["k_rrf"])


def combined_weights(text_weights: dict[str, float], signals: Sequence[str], like_vectors) -> dict[str, float]:
    """Fusion weights of a text + like query: the text signals' weights and the like-lists' (named
    "like_<kind>") each scaled to sum to 1, so that the words and the example photo count equally."""
    text_w = {s: max(0.0, float(text_weights.get(s, 1.0))) for s in signals}   # 0: not searched, as before
    like_w = {kind: float(FUSION["like_weights"][kind]) for kind in like_vectors}
    ts, ls = sum(text_w.values()) or 1.0, sum(like_w.values()) or 1.0
    return {**{s: w / ts for s, w in text_w.items()}, **{f"like_{kind}": w / ls for kind, w in like_w.items()}}
