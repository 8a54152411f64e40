"""Read queries on the store that more than one part needs: folders and paths."""
from __future__ import annotations

import os

from sqlalchemy import or_


def under_clause(column, root: str):
    """SQL: ``column`` is ``root`` or lies below it (a range on the index, no LIKE escaping)."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    upper = prefix[:-1] + chr(ord(os.sep) + 1)
    return or_(column == (root.rstrip(os.sep) or os.sep), (column >= prefix) & (column < upper))
