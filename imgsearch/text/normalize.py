"""The one text normalisation module: caption vocabulary, BM25 documents and queries all use it.

    tokenize(text)      NFKC + casefold + accent folding, apostrophes dropped, words of [a-z0-9]+
    STOPWORDS           frozenset loaded from text/data/stopwords.txt (package data)
    stem(word)          Snowball English (PyStemmer: the Snowball project's C stemmer), cached
    search_terms(text)  tokenize -> drop stopwords -> stem   (BM25 documents and queries)
    keywords(texts)     distinct non-stopword words, unstemmed, in order of first appearance

Importing this module is cheap, and so is the first stem() call: PyStemmer is a small C extension
(nltk's SnowballStemmer, used before, cost ~1 s of import — it pulls scipy.stats — on every cold
query). The Snowball 2+ English stemmer also keeps words such as "evening", "organic", "university"
apart from "even", "organ", "universe", which nltk's older port conflated.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources
from typing import Iterable

__all__ = [
    "tokenize",
    "STOPWORDS",
    "stem",
    "search_terms",
    "keywords",
    "NORMALIZER_VERSION",
]

#: Bump whenever tokenize/stopwords/stem change in a way that changes search_terms():
#: anything persisted from search_terms() (the BM25 table) must then be rebuilt.
NORMALIZER_VERSION = "2:nfkc-casefold-fold-accents:[a-z0-9]+:stop189:snowball2-english"

_WORD_RE = re.compile(r"[a-z0-9]+")
# ASCII apostrophe, right/left single quotation marks, modifier letter apostrophe, grave, acute, prime
_APOSTROPHES = "'\u2019\u2018\u02bc\u0060\u00b4\u2032"
_APOS_TABLE = str.maketrans("", "", _APOSTROPHES)


def _load_stopwords() -> frozenset[str]:
    text = resources.files("imgsearch.text").joinpath("data/stopwords.txt").read_text("utf-8")
    words = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            words.add(line)
    return frozenset(words)


STOPWORDS: frozenset[str] = _load_stopwords()


def _fold(text: str) -> str:
    """NFKC, casefold, strip diacritics (café -> cafe, straße -> strasse)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of [a-z0-9]+ (apostrophes dropped: "don't" -> "dont"), no stemming."""
    if not text:
        return []
    if text.isascii():
        text = text.lower()
    else:
        text = _fold(text)
    return _WORD_RE.findall(text.translate(_APOS_TABLE))


@functools.lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer("english")


@functools.lru_cache(maxsize=262144)
def stem(word: str) -> str:
    """Snowball (Porter2) English stem of one lower-case word."""
    return _stemmer().stemWord(word)


def search_terms(text: str) -> list[str]:
    """tokenize -> drop stopwords -> stem. Used for BM25 documents and queries alike."""
    stop = STOPWORDS
    return [stem(t) for t in tokenize(text) if t not in stop]


def keywords(texts: Iterable[str]) -> list[str]:
    """Distinct non-stopword words (unstemmed) across texts, in order of first appearance."""
    if isinstance(texts, str):
        texts = [texts]
    stop = STOPWORDS
    seen: dict[str, None] = {}
    for text in texts:
        for t in tokenize(text):
            if t not in stop and t not in seen:
                seen[t] = None
    return list(seen)
