"""Helpers shared by the library/indexer tests: one tiny captioner per test session, small photos."""
from __future__ import annotations

import contextlib
import functools
import signal
import sqlite3
from pathlib import Path

from photos import make_photo

ROOT = Path(__file__).resolve().parent.parent  # the repository root
SIZE = (320, 240)
KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker"]


@functools.lru_cache(maxsize=None)
def tiny_captioner(seed: int = 0):
    import torch

    torch.set_num_threads(1)  # be gentle: the suite shares 2 cores with training jobs
    from imgsearch.model.captioner import Captioner

    return Captioner.tiny(seed=seed)


def make_set(folder: Path, kinds, prefix="p", size=SIZE) -> list[Path]:
    return [make_photo(folder / f"{prefix}{i}_{kind}.jpg", kind=kind, size=size) for i, kind in enumerate(kinds)]


def rows(db: Path, sql: str, args=()):
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


def photos(db: Path) -> dict[str, tuple]:
    """path -> (id, error, caption, model_version, indexed_at)"""
    return {r[0]: r[1:] for r in rows(db, "SELECT path, id, error, caption, model_version, indexed_at FROM photos")}


def check_consistent(db: Path) -> None:
    """Every good photo has captions, a caption embedding and keywords; failed ones have none."""
    for pid, err, cap, emb in rows(db, "SELECT id, error, caption, length(caption_embedding) FROM photos"):
        n_caps = rows(db, "SELECT count(*) FROM captions WHERE photo_id = ?", (pid,))[0][0]
        if err is None:
            assert cap is not None and emb == 384 * 4 and n_caps >= 1, pid
        else:
            assert cap is None and emb is None and n_caps == 0, pid
    orphans = rows(db, "SELECT count(*) FROM captions WHERE photo_id NOT IN (SELECT id FROM photos)")[0][0]
    assert orphans == 0


def captioner_with_projection():
    """The tiny captioner with a (random, untrained) photo projection: photos get image embeddings too."""
    from imgsearch.model.projection import ProjectionConfig, build_projection

    cap = tiny_captioner(0)
    cap.projection = build_projection(ProjectionConfig(hidden=64, attn_dim=32)).eval()
    return cap


@contextlib.contextmanager
def alarm(seconds: int, what: str):
    """Raise TimeoutError in the main thread after ``seconds`` (SIGALRM): a hung test (a Ray pipeline that waits
    forever) fails instead of blocking the suite."""
    def expired(*_):
        raise TimeoutError(f"{what} took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
