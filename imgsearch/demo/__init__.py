"""``imgsearch demo``: the main job on photos that ship with the package.

    from imgsearch.demo import run_demo
    result = run_demo()                 # index photos/ into a temporary library, answer QUERIES
    for a in result.answers:
        print(a.query, a.ms, [h.path for h in a.hits])

``photos/`` holds 8 small sample photos from scikit-image's data set, every one public domain or CC0
(LICENSE.txt names each file, its author and its licence). Nothing is downloaded: the photos, the
captioner and the text embedder all come with the installed packages.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from imgsearch.hits import Hit

PHOTOS = Path(__file__).resolve().parent / "photos"
LICENSE = Path(__file__).resolve().parent / "LICENSE.txt"
# one query per thing the shipped checkpoint can name in these photos (its captions come from Flickr8k)
QUERIES = ("a cup of coffee", "a cat", "a man holding a camera", "a rocket launch", "a horse")


@dataclass
class DemoAnswer:
    """One query of the demo: its text, how long it took (ms) and its hits, best first."""
    query: str
    ms: float
    hits: list[Hit]

    def to_dict(self) -> dict:
        return {"query": self.query, "ms": round(self.ms, 1), "hits": [h.to_dict() for h in self.hits]}


@dataclass
class DemoResult:
    """What :func:`run_demo` did: where the photos and the library were, the timings (seconds) of loading
    the captioner and of indexing, and one :class:`DemoAnswer` per query."""
    photos_dir: str
    photos: int
    library: str | None          # None: a temporary library, deleted when the demo ended
    load_s: float
    index_s: float
    failed: int
    rerank: bool
    answers: list[DemoAnswer] = field(default_factory=list)

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.index_s if self.index_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"photos_dir": self.photos_dir, "photos": self.photos, "failed": self.failed,
                "library": self.library, "load_s": round(self.load_s, 2), "index_s": round(self.index_s, 2),
                "photos_per_s": round(self.photos_per_s, 2), "rerank": self.rerank,
                "answers": [a.to_dict() for a in self.answers]}


def sample_photos() -> list[Path]:
    """The shipped sample photos, sorted by name."""
    return sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def run_demo(queries: Sequence[str] = QUERIES, *, k: int = 3, library: str | os.PathLike | None = None,
             device: str = "cpu", captioner=None, rerank: bool = False) -> DemoResult:
    """Index the shipped sample photos into a library and answer ``queries`` (``k`` hits each).

    ``library``: a folder to keep the library in (default: a temporary one, deleted afterwards; the hits'
    paths point at the photos inside the package either way). ``device``: where the captioner runs
    (default cpu: 8 photos do not pay for starting a GPU). ``captioner``: an already-loaded one.
    ``rerank``: off by default — the re-ranker is the Flickr8k captioner, and on these photos, which are
    unlike Flickr8k, it moves the cat above the coffee cup for "a cup of coffee"; ``True`` shows that.
    Raises :class:`~imgsearch.errors.UserError` for an empty query list, a bad ``k`` or query."""
    from imgsearch.errors import UserError
    from imgsearch.library import Library

    from imgsearch.limits import check_k

    queries = list(queries)
    if not queries:
        raise UserError("the demo needs at least one query")
    k = check_k(k)          # before minutes of work, not after
    photos = sample_photos()
    with tempfile.TemporaryDirectory(prefix="imgsearch-demo-") as tmp:
        folder = Path(library).expanduser().resolve() if library is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with Library(folder / "library.db", device=device, captioner=captioner) as lib:
            t0 = time.perf_counter()
            lib.captioner()
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = lib.index([PHOTOS], workers=0, progress=False)
            index_s = time.perf_counter() - t0
            result = DemoResult(photos_dir=str(PHOTOS), photos=len(photos), library=str(folder) if library else None,
                                load_s=load_s, index_s=index_s, failed=report.failed, rerank=rerank)
            for q in queries:
                t0 = time.perf_counter()
                hits = lib.query(q, k=k, rerank=rerank)
                result.answers.append(DemoAnswer(q, (time.perf_counter() - t0) * 1000, hits))
    return result
