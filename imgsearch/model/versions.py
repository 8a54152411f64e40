"""Which checkpoint a library's descriptions come from — computed without importing torch, so a
query can name the checkpoint (and find its cached query scorer) at no start-up cost."""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

SHIPPED_NAME = "captioner.pt"
# What an index run stores per photo besides captions/tags/embeddings; part of the version a photo is
# recorded under, so a library described without these is re-described on its next index run.
# "+cells": the decoder's grid cells for caption-likelihood re-ranking (model/rerank.py).
DESCRIPTION_FORMAT = "+cells"


def shipped_checkpoint() -> Path:
    return Path(str(resources.files("imgsearch.model") / "weights" / SHIPPED_NAME))


def checkpoint_version(path: str | Path | None = None) -> str:
    """The version a checkpoint's descriptions are stored under: file stem + first 12 hex of its SHA-256
    + DESCRIPTION_FORMAT."""
    path = Path(path) if path is not None else shipped_checkpoint()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:12]}{DESCRIPTION_FORMAT}"
