"""A photo's date, and the date bounds of a query (``--after`` / ``--before``).

    start = parse_bound("2024", end=False)       # datetime(2024, 1, 1): the first instant of 2024
    end = parse_bound("2024-06", end=True)       # datetime(2024, 7, 1): just past the end of June 2024
    photo_date(taken_at, mtime_ns)               # ("2024-06-15T10:00:00", "exif") or (…, "file")

A photo's date is its EXIF date taken (``photos.taken_at``: the camera's clock, no time zone) when it has
one, else the file's modification time (``photos.mtime_ns``) in this computer's local time; its *source* says
which: "exif" or "file".

Bounds accept a year (``2024``), a month (``2024-06``), a day (``2024-06-15``), or a date and time
(``2024-06-15T10:30`` / ``2024-06-15 10:30:00``), or a :class:`datetime.date` / :class:`datetime.datetime`.
**Both bounds include the period they name**: ``after="2024-06"`` keeps photos from 1 June 2024 00:00 on,
``before="2024-06"`` photos up to the end of 30 June 2024; so ``after="2024", before="2024"`` is the
year 2024. A date and time is that instant (kept on either side). Internally a range is
``start <= date < end`` with ``end`` the first instant past the named period.
"""
from __future__ import annotations

import datetime as _dt
import re

from imgsearch.errors import UserError

SOURCES = ("exif", "file")
_PLAIN = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")
FORMS = "YYYY, YYYY-MM or YYYY-MM-DD"


def parse_bound(value, end: bool, name: str = "date") -> _dt.datetime | None:
    """The instant a bound stands for: with ``end=False`` the first instant of the named period (``after``),
    with ``end=True`` the first instant past it (``before``, exclusive). None or "" → None. A value that is
    no date raises UserError (one line, naming ``name``)."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None) + (_dt.timedelta(microseconds=1) if end else _dt.timedelta(0))
    if isinstance(value, _dt.date):
        day = _dt.datetime(value.year, value.month, value.day)
        return day + _dt.timedelta(days=1) if end else day
    text = str(value).strip()
    if not text:
        return None
    m = _PLAIN.match(text)
    try:
        if m:
            year, month, day = int(m.group(1)), m.group(2), m.group(3)
            if month is None:
                start, nxt = _dt.datetime(year, 1, 1), _dt.datetime(year + 1, 1, 1) if year < 9999 else _dt.datetime.max
            elif day is None:
                start = _dt.datetime(year, int(month), 1)
                nxt = (_dt.datetime(year + (start.month == 12), start.month % 12 + 1, 1)
                       if (year, start.month) != (9999, 12) else _dt.datetime.max)
            else:
                start = _dt.datetime(year, int(month), int(day))
                nxt = start + _dt.timedelta(days=1) if start.date() < _dt.date.max else _dt.datetime.max
            return nxt if end else start
        if len(text) > 10 and text[4:5] == "-" and text[10] in "T ":
            instant = _dt.datetime.fromisoformat(text).replace(tzinfo=None)
            return instant + (_dt.timedelta(microseconds=1) if end else _dt.timedelta(0))
    except (ValueError, OverflowError):
        pass
    raise UserError(f"invalid {name} {text[:40]!r}: use {FORMS} (or YYYY-MM-DDTHH:MM)")


def parse_range(after=None, before=None) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    """(start, end) of ``after`` / ``before`` (see the module doc); UserError when after is later than before."""
    start = parse_bound(after, end=False, name="after date")
    end = parse_bound(before, end=True, name="before date")
    if start is not None and end is not None and start >= end:
        raise UserError(f"the after date ({after}) is later than the before date ({before}): nothing can match")
    return start, end


def to_ns(instant: _dt.datetime) -> int:
    """A naive local ``instant`` as nanoseconds since the epoch (to compare with a file's mtime_ns)."""
    if instant == _dt.datetime.max:
        return 2 ** 63 - 1
    try:
        return int(instant.timestamp() * 1_000_000) * 1000
    except (OverflowError, OSError, ValueError):
        return 0 if instant.year < 1970 else 2 ** 63 - 1


def file_time(mtime_ns: int) -> _dt.datetime | None:
    """A file's modification time as a naive local datetime (None when out of range)."""
    try:
        return _dt.datetime.fromtimestamp(int(mtime_ns) / 1e9)
    except (OverflowError, OSError, ValueError):
        return None


def photo_date(taken_at: _dt.datetime | None, mtime_ns: int | None) -> tuple[_dt.datetime | None, str | None]:
    """(the photo's date, "exif" | "file"): the EXIF date taken, else the file's mtime; (None, None) when
    neither is known."""
    if taken_at is not None:
        return taken_at, "exif"
    t = file_time(mtime_ns) if mtime_ns is not None else None
    return (t, "file") if t is not None else (None, None)


def iso(t: _dt.datetime | None) -> str | None:
    """``t`` as ISO 8601 to the second ("2024-06-15T10:00:00"), or None."""
    return None if t is None else t.replace(microsecond=0).isoformat()
