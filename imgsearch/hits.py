"""What a query returns: one :class:`Hit` per photo, best first."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field, fields


@dataclass
class Hit:
    path: str                 # absolute
    score: float
    caption: str
    keywords: list[str]
    id: int
    tags: list[str] = field(default_factory=list)
    rank: int = 0
    taken_at: str | None = None       # the photo's date, ISO 8601 to the second (no time zone): see date_source
    date_source: str | None = None    # "exif": the EXIF date taken; "file": the file's mtime (local time)
    copies: list[str] = field(default_factory=list)   # other paths of the same file content (search/duplicates.py)
    ocr_text: str | None = None       # the text read in the photo (index --ocr: indexer/ocr.py), lines by "\n"

    def to_dict(self) -> dict:
        """Every field of the hit as plain JSON types (``json.dumps(hit.to_dict())`` works): paths and
        other ``os.PathLike`` values become ``str``, dates ISO 8601 strings, tuples lists. Built from the
        dataclass's fields, so a field added to :class:`Hit` is in it too; ``rank`` comes first."""
        d = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        return {"rank": d.pop("rank"), **d}


def _plain(value):
    """``value`` as JSON types: PathLike → str, date/datetime → ISO string, tuple/set/list → list, numpy →
    Python numbers."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy":   # a numpy scalar or array (a score left as float32)
        return _plain(value.tolist())
    return value
