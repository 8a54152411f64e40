"""Limits on what a user may ask, shared by the API (:meth:`imgsearch.Library.query`), the CLI and the web
server, so that the three accept and refuse the same queries."""
from __future__ import annotations

# characters in a query's text, counted after runs of white space collapse to one space: longer queries
# are refused (UserError; HTTP 400). The text embedder reads at most 256 tokens and BM25 gains nothing from
# a paragraph, so 500 characters (about 80 words) is far more than a search needs.
MAX_QUERY_CHARS = 500


def query_length(text: str) -> int:
    """The length the limit applies to: ``text`` with runs of white space collapsed, ends stripped."""
    return len(" ".join(text.split()))


def check_k(k) -> int:
    """``k`` (how many hits) as an int of at least 1; UserError otherwise (k=0 used to return no hits)."""
    from imgsearch.errors import UserError

    try:
        n = int(k)
    except (TypeError, ValueError):
        raise UserError(f"k must be a whole number of at least 1, not {k!r}") from None
    if n != k or n < 1:
        raise UserError(f"k must be a whole number of at least 1, not {k!r}")
    return n
