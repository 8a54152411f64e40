"""What a query may return: filters that narrow it to a set of photo ids, and the ``-word`` exclusions.

    words = split_query("dog -beach")            # QueryWords(text="dog", excluded=(("beach",),))
    f = Filters([InFolder("/photos/2024"), DateRange.parse("2024-06", "2024-08")], [Excluding(words.excluded)])
    f.allowed(store)                              # set of photo ids the query may return; None: every photo

A filter is an object with ``ids(store) -> set[int]``: the good photos it names. ``Filters.include`` are
intersected (a photo must pass every one); the photos named by ``Filters.exclude`` are then removed (when
only exclusions are given, from every good photo). The query engine hands the resulting set to every signal
(BM25, FAISS) like the folder filter always was, so a filtered ranking is still prefix-stable: it is the
ranking of the same query over a smaller library.

To add a filter (e.g. ``near=PLACE``): a small frozen dataclass with ``ids(store)`` (its SQL in
store/queries.py), built in ``Library.query`` from its argument and appended to ``include``; nothing in the
engine changes.

Exclusion: a query word written with a leading ``-`` (``-beach``, ``-"sandy beach"``) is not searched for;
instead every photo whose BM25 document (captions, keywords, tags and region tags) holds all of that term's
search terms (normalize.search_terms: stop words dropped, stemmed, so ``-beaches`` excludes "beach" too) is
left out, in every mode. A ``-`` inside a word (``t-shirt``) or alone is an ordinary character.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from imgsearch.search import dates as _dates
from imgsearch.store import queries
from imgsearch.text.normalize import search_terms

# a "-" at the start of the text or after white space, then a quoted phrase or a word
_EXCLUDED = re.compile(r'(?:(?<=\s)|^)-(?:"([^"]*)"?|([^\s"-]\S*))')


class IdFilter(Protocol):
    def ids(self, store) -> set[int]: ...


@dataclass(frozen=True)
class QueryWords:
    text: str                                   # the query without its excluded terms ("" when none is left)
    excluded: tuple[tuple[str, ...], ...] = ()  # per excluded term: its search terms (all must match)


def split_query(text: str | None) -> QueryWords:
    """The words to search for and the excluded terms (module doc) of a query."""
    text = text or ""
    excluded: list[tuple[str, ...]] = []
    for m in _EXCLUDED.finditer(text):
        terms = tuple(dict.fromkeys(search_terms(m.group(1) if m.group(1) is not None else m.group(2))))
        if terms and terms not in excluded:
            excluded.append(terms)
    rest = " ".join(_EXCLUDED.sub(" ", text).split())
    return QueryWords(rest, tuple(excluded))


@dataclass(frozen=True)
class InFolder:
    folder: str                                 # a resolved absolute folder

    def ids(self, store) -> set[int]:
        return queries.ids_under(store, self.folder)


@dataclass(frozen=True)
class DateRange:
    """Photos dated ``start <= date < end`` (see search/dates.py: EXIF date taken, else the file's mtime)."""
    start: object = None                        # datetime | None
    end: object = None                          # datetime | None (exclusive)

    @classmethod
    def parse(cls, after=None, before=None) -> "DateRange | None":
        """The range of ``after`` / ``before`` (plain dates, both inclusive of the period named), or None."""
        start, end = _dates.parse_range(after, before)
        return None if start is None and end is None else cls(start, end)

    def ids(self, store) -> set[int]:
        return queries.ids_dated(store, self.start, self.end,
                                 None if self.start is None else _dates.to_ns(self.start),
                                 None if self.end is None else _dates.to_ns(self.end))


@dataclass(frozen=True)
class Excluding:
    """The photos whose BM25 document holds every search term of one of ``terms``' entries."""
    terms: tuple[tuple[str, ...], ...]

    def ids(self, store) -> set[int]:
        return queries.ids_with_terms(store, self.terms) if self.terms else set()


@dataclass
class Filters:
    include: list = field(default_factory=list)     # IdFilter: a photo must be in every one
    exclude: list = field(default_factory=list)     # IdFilter: a photo in any one is left out

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def allowed(self, store) -> set[int] | None:
        """The photo ids the query may return; None when nothing is filtered."""
        allowed: set[int] | None = None
        for f in self.include:
            ids = f.ids(store)
            allowed = ids if allowed is None else allowed & ids
            if not allowed:
                return set()
        out: set[int] = set()
        for f in self.exclude:
            out |= f.ids(store)
        if out:
            allowed = (queries.good_ids(store) if allowed is None else allowed) - out
        return allowed


def build(folder: str | None = None, after=None, before=None, excluded: Sequence[tuple[str, ...]] = (),
          more: Sequence[IdFilter] = ()) -> Filters:
    """The Filters of a query's arguments (``more``: further include filters)."""
    include: list = [InFolder(folder)] if folder is not None else []
    rng = DateRange.parse(after, before)
    if rng is not None:
        include.append(rng)
    include += list(more)
    return Filters(include, [Excluding(tuple(excluded))] if excluded else [])
