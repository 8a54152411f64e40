"""Short-query sets from a COCO-style caption file, and their mAP / P@5 through the real Library API.

The reusable half of ``bench/short_queries.py`` (the command line over it). From another bench script:

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shortq import build_queries, evaluate, average_precision, library_modes

Query sets (``build_queries``), all matched on imgsearch's normalised terms
(``imgsearch.text.normalize.search_terms``: stop words dropped, Snowball stems):

- ``one``: one noun. A photo is relevant when at least 2 of its human captions contain the noun's stem.
- ``two``: two words, ``sub`` = ``noun+noun`` (two nouns of one caption, the most frequent pairs) or
  ``adj+noun`` (an adjective right before a noun, stop words skipped: "black dog", "red shirt"). Relevant:
  at least 2 captions contain both stems (anywhere in the caption).
- ``class``: ImageNet class names (``imgsearch/model/data/imagenet_tags.json``, field "name") that occur in
  the captions. Relevant: at least 2 captions contain every term of the name ("soccer ball" needs "soccer"
  and "ball"; matching any one word of a name made "great white shark" relevant to 116 Flickr8k dev photos
  through "white", so it is not done).

A query is kept when it has at least ``min_relevant`` (2) relevant photos and at most ``max_share`` (30 %)
of the photos.

Nouns: no POS tagger is available offline (no nltk data). A caption word is a noun unless it is an
imgsearch stop word, a number, or listed in ``bench/data/short_query_stoplist.txt`` (made by hand from the
dev captions' frequent words: verb forms, adjectives, adverbs, numbers). A stem counts as a noun when its
unlisted surface forms make at least ``NOUN_SHARE`` of its occurrences; the query is written with its most
frequent unlisted surface form ("fish", though the captions say "fishing" more often). Words tagged ``a``
in that list are the adjectives of the ``adj+noun`` queries. Single-word class names must pass the same
noun test ("fly" and "orange" are class names, but the captions use them as a verb and a colour); names
that lose a word to the stop words ("can opener" -> "opener") are dropped.
"""
from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

HERE = Path(__file__).resolve().parent
STOPLIST = HERE / "data" / "short_query_stoplist.txt"
NOUN_SHARE = 0.25
KINDS = ("one", "two", "class")
KIND_NAMES = {"one": "one-word", "two": "two-word", "class": "class names"}


# ---------------------------------------------------------------------------------------------- word lists
def load_stoplist(path: str | Path = STOPLIST) -> dict[str, str]:
    """{surface word: tag} of the non-noun list (tag a = adjective, v = verb form, x = other)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].split()
        if line:
            out[line[0].lower()] = line[1] if len(line) > 1 else "x"
    return out


def imagenet_classes() -> list[dict]:
    """The shipped ImageNet tag table: [{"wnid", "name", "hypernyms"}] (1,000 classes)."""
    text = resources.files("imgsearch.model").joinpath("data/imagenet_tags.json").read_text("utf-8")
    return json.loads(text)


def load_photos(captions_json: str | Path, images_dir: str | Path) -> tuple[list[str], list[list[str]]]:
    """(absolute resolved photo paths, their captions), as the library stores the paths."""
    from imgsearch.model.coco import load_captions

    refs = load_captions(captions_json)
    paths = [str((Path(images_dir) / name).resolve()) for name in refs.file_names]
    return paths, refs.captions


# ------------------------------------------------------------------------------------------- query sets
class _Vocab:
    """Per-caption token sequences with stems, the noun stems and their query spellings."""

    def __init__(self, captions: Sequence[Sequence[str]], stoplist: dict[str, str]):
        from imgsearch.text.normalize import STOPWORDS, stem, tokenize

        self.stoplist = stoplist
        # photo -> caption -> [(surface, stem)] without stop words
        self.tokens = [[[(t, stem(t)) for t in tokenize(c) if t not in STOPWORDS] for c in caps] for caps in captions]
        self.stem_sets = [[{s for _, s in cap} for cap in photo] for photo in self.tokens]
        surfaces: dict[str, Counter] = defaultdict(Counter)
        for photo in self.tokens:
            for cap in photo:
                for t, s in cap:
                    surfaces[s][t] += 1
        self.surfaces = surfaces
        self.nouns: dict[str, str] = {}            # noun stem -> query word
        for s, forms in surfaces.items():
            unlisted = Counter({t: n for t, n in forms.items() if t not in stoplist and not t.isdigit()})
            if unlisted and sum(unlisted.values()) >= NOUN_SHARE * sum(forms.values()):
                self.nouns[s] = max(unlisted.items(), key=lambda kv: (kv[1], -len(kv[0]), kv[0]))[0]

    def relevant(self, terms: Iterable[str], min_captions: int = 2) -> tuple[list[int], int]:
        """(photos (indexes) where at least ``min_captions`` captions contain every term, how many captions
        of all photos contain every term)."""
        need = set(terms)
        per = [sum(need <= c for c in caps) for caps in self.stem_sets]
        return [i for i, n in enumerate(per) if n >= min_captions], sum(per)

    def phrase_count(self, words: Sequence[str]) -> int:
        """Captions whose non-stop-word tokens contain ``words`` contiguously."""
        n, w = 0, list(words)
        for photo in self.tokens:
            for cap in photo:
                seq = [t for t, _ in cap]
                n += any(seq[i:i + len(w)] == w for i in range(len(seq) - len(w) + 1))
        return n


def build_queries(captions_json: str | Path, images_dir: str | Path, *, min_relevant: int = 2,
                  max_share: float = 0.30, min_captions: int = 2, max_pairs: int = 150,
                  stoplist: str | Path = STOPLIST) -> list[dict]:
    """The one-word, two-word and class-name query sets of a caption file (see the module docstring).

    Each query: {"query", "kind" (one | two | class), "sub" (noun | noun+noun | adj+noun | class),
    "terms" (its stems), "relevant" (absolute photo paths, sorted), "n_relevant", "n_captions" (captions of
    all photos that contain every term)}; class queries also carry "wnid". ``max_pairs`` caps each two-word
    sub-kind (the pairs with the most relevant photos are kept, then those named by the most captions)."""
    paths, captions = load_photos(captions_json, images_dir)
    return _build(paths, captions, min_relevant=min_relevant, max_share=max_share, min_captions=min_captions,
                  max_pairs=max_pairs, stoplist=load_stoplist(stoplist))


def _build(paths, captions, *, min_relevant, max_share, min_captions, max_pairs, stoplist) -> list[dict]:
    from imgsearch.text.normalize import search_terms, tokenize

    voc = _Vocab(captions, stoplist)
    n_max = int(max_share * len(paths))

    def make(query: str, kind: str, sub: str, terms: Sequence[str], **extra) -> dict | None:
        rel, n_caps = voc.relevant(terms, min_captions)
        if not (min_relevant <= len(rel) <= n_max):
            return None
        return {"query": query, "kind": kind, "sub": sub, "terms": list(terms),
                "relevant": sorted(paths[i] for i in rel), "n_relevant": len(rel), "n_captions": n_caps, **extra}

    out: list[dict] = []
    # one word: every noun stem
    for s in sorted(voc.nouns):
        q = make(voc.nouns[s], "one", "noun", [s])
        if q:
            out.append(q)

    # two words: pairs counted per caption
    nn_caps: Counter = Counter()                        # frozenset({a, b}) -> captions naming both nouns
    nn_order: Counter = Counter()                       # (a, b) -> captions where a comes first
    an_caps: Counter = Counter()                        # (adj stem, noun stem) -> captions with the pair
    an_surface: dict[tuple, Counter] = defaultdict(Counter)
    for photo in voc.tokens:
        for cap in photo:
            first: dict[str, int] = {}
            for i, (t, s) in enumerate(cap):
                if s in voc.nouns and t not in stoplist:
                    first.setdefault(s, i)
            for a, b in itertools.combinations(sorted(first), 2):
                nn_caps[frozenset((a, b))] += 1
                nn_order[(a, b) if first[a] < first[b] else (b, a)] += 1
            seen = set()
            for (t1, s1), (t2, s2) in zip(cap, cap[1:]):
                if stoplist.get(t1) == "a" and s2 in voc.nouns and t2 not in stoplist and s1 != s2:
                    if (s1, s2) not in seen:
                        an_caps[(s1, s2)] += 1
                        seen.add((s1, s2))
                    an_surface[(s1, s2)][t1] += 1

    def top_pairs(cands: list[dict]) -> list[dict]:
        cands.sort(key=lambda q: (-q["n_relevant"], -q["n_captions"], q["query"]))
        return cands[:max_pairs]

    nn: list[dict] = []
    for pair, n in nn_caps.items():
        if n < min_captions * min_relevant:
            continue
        a, b = sorted(pair)
        a, b = (a, b) if nn_order[(a, b)] >= nn_order[(b, a)] else (b, a)
        q = make(f"{voc.nouns[a]} {voc.nouns[b]}", "two", "noun+noun", [a, b])
        if q:
            nn.append(q)
    an: list[dict] = []
    for (s1, s2), n in an_caps.items():
        if n < min_captions * min_relevant:
            continue
        adj = an_surface[(s1, s2)].most_common(1)[0][0]
        q = make(f"{adj} {voc.nouns[s2]}", "two", "adj+noun", [s1, s2])
        if q:
            an.append(q)
    out += top_pairs(nn) + top_pairs(an)

    # ImageNet class names
    by_terms: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    for c in imagenet_classes():
        toks, terms = tokenize(c["name"]), search_terms(c["name"])
        if not terms or len(terms) != len(toks):
            continue                                    # lost a word to the stop words ("can opener")
        if len(terms) == 1 and terms[0] not in voc.nouns:
            continue                                    # captions use it as no noun ("fly", "orange")
        by_terms[tuple(terms)].append((voc.phrase_count(toks), c))
    for terms, named in sorted(by_terms.items()):
        _, c = max(named, key=lambda nc: nc[0])          # "sunglasses" over "sunglass": the captions' spelling
        q = make(c["name"], "class", "class", list(terms), wnid=c["wnid"])
        if q:
            out.append(q)
    return out


def write_queries(path: str | Path, queries: list[dict], **meta) -> None:
    """The query sets as JSON: {**meta, "queries": [...]} (load them back with load_queries)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**meta, "queries": queries}, indent=1) + "\n", "utf-8")


def load_queries(path: str | Path) -> list[dict]:
    data = json.loads(Path(path).read_text("utf-8"))
    return data["queries"] if isinstance(data, dict) else data


def noun_words(captions_json: str | Path, images_dir: str | Path = ".", stoplist: str | Path = STOPLIST,
               min_relevant: int = 2, min_captions: int = 2) -> dict[str, str]:
    """{noun stem: query word} of the nouns that name enough photos to be a query, as build_queries decides
    them before the max_share cut (to review the stoplist on a new caption set)."""
    _, captions = load_photos(captions_json, images_dir)
    voc = _Vocab(captions, load_stoplist(stoplist))
    return {s: w for s, w in voc.nouns.items() if len(voc.relevant([s], min_captions)[0]) >= min_relevant}


# ------------------------------------------------------------------------------------------------ scoring
def average_precision(ranked_paths: Sequence[str], relevant: Iterable[str]) -> float:
    """AP of one ranked list: mean over ALL relevant photos of the precision at its rank (0 if not returned)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    hits, total = 0, 0.0
    for i, p in enumerate(ranked_paths, 1):
        if p in rel:
            hits += 1
            total += hits / i
    return total / len(rel)


def precision_at(ranked_paths: Sequence[str], relevant: Iterable[str], n: int = 5) -> float:
    """Relevant photos among the first ``n`` / n (fewer results count as misses)."""
    rel = set(relevant)
    return sum(p in rel for p in ranked_paths[:n]) / n


def library_modes() -> list[tuple[str, str, bool]]:
    """(label, mode, rerank) for every search mode of the library, looked up now in
    imgsearch.search.settings.MODES; hybrid appears twice (with and without re-ranking)."""
    from imgsearch.search.settings import MODES

    out = []
    for m in MODES:
        out.append((m, m, True))
        if m == "hybrid":
            out.append(("hybrid --no-rerank", m, False))
    return out


def evaluate(lib, queries: list[dict], modes: Sequence[str] | None = None, k: int = 100,
             keep_top: int = 3) -> dict:
    """Run every query through ``lib.query(q, k=k, mode=..., rerank=...)`` for each mode label (default:
    library_modes(); labels as it names them, e.g. "hybrid --no-rerank") and score mAP and P@5.

    Returns {"k", "modes", "skipped" {label: why}, "seconds" {label: s}, "no_results" {label: queries that
    returned nothing}, "summary" {set: {label: {"mAP", "P@5", "n"}}} for the sets one / two / class /
    two:noun+noun / two:adj+noun / all, "per_query" [{"query",
    "kind", "sub", "n_relevant", "ap" {label}, "p5" {label}, "hits" {label: results returned}, "top" (the
    first ``keep_top`` hits of the first mode: [path, relevant?, caption])}]}."""
    from imgsearch import ImgsearchError

    known = library_modes()
    if modes is None:
        chosen = known
    else:
        by_label = {lab: (lab, m, r) for lab, m, r in known}
        chosen = [by_label.get(lab, (lab, lab, True)) for lab in modes]
    per_query = [{"query": q["query"], "kind": q["kind"], "sub": q.get("sub", q["kind"]),
                  "n_relevant": len(q["relevant"]), "ap": {}, "p5": {}, "hits": {}} for q in queries]
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for mi, (label, mode, rerank) in enumerate(chosen):
        t0 = time.perf_counter()
        try:
            for q, row in zip(queries, per_query):
                hits = lib.query(q["query"], k=k, mode=mode, rerank=rerank)
                ranked = [h.path for h in hits]
                row["ap"][label] = average_precision(ranked, q["relevant"])
                row["p5"][label] = precision_at(ranked, q["relevant"], 5)
                row["hits"][label] = len(ranked)
                if mi == 0 and keep_top:
                    rel = set(q["relevant"])
                    row["top"] = [[h.path, h.path in rel, h.caption] for h in hits[:keep_top]]
        except ImgsearchError as e:                     # e.g. a mode this library cannot serve
            skipped[label] = str(e)
            for row in per_query:
                row["ap"].pop(label, None)
                row["p5"].pop(label, None)
                row["hits"].pop(label, None)
            continue
        seconds[label] = time.perf_counter() - t0
    labels = [lab for lab, _, _ in chosen if lab not in skipped]
    empty = {lab: sum(r["hits"][lab] == 0 for r in per_query) for lab in labels}
    return {"k": k, "modes": labels, "skipped": skipped, "seconds": seconds, "no_results": empty,
            "summary": summarize(per_query, labels), "per_query": per_query}


def summarize(per_query: list[dict], labels: Sequence[str]) -> dict:
    """{set: {label: {"mAP", "P@5", "n"}}} over the query sets one / two / class, the two-word sub-kinds
    (two:noun+noun, two:adj+noun) and all."""
    groups: dict[str, list[dict]] = {k: [r for r in per_query if r["kind"] == k] for k in KINDS}
    for sub in ("noun+noun", "adj+noun"):
        groups[f"two:{sub}"] = [r for r in per_query if r["kind"] == "two" and r["sub"] == sub]
    groups["all"] = list(per_query)
    out: dict[str, dict] = {}
    for name, rows in groups.items():
        if not rows:
            continue
        out[name] = {lab: {"mAP": sum(r["ap"][lab] for r in rows) / len(rows),
                           "P@5": sum(r["p5"][lab] for r in rows) / len(rows), "n": len(rows)}
                     for lab in labels}
    return out
