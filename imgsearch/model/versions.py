"""Which checkpoint a library's descriptions come from — computed without importing torch, so a
query can name the checkpoint (and find its cached query scorer) at no start-up cost."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from imgsearch.files import atomic_write, cache_dir, sha256_file

SHIPPED_NAME = "captioner.pt"
# What an index run stores per photo besides captions/tags/embeddings; part of the version a photo is
# recorded under, so a library described without these is re-described on its next index run.
# "+cells": the decoder's grid cells for caption-likelihood re-ranking (model/rerank.py).
DESCRIPTION_FORMAT = "+cells"


def shipped_checkpoint() -> Path:
    return Path(str(resources.files("imgsearch.model") / "weights" / SHIPPED_NAME))


def checkpoint_version(path: str | Path | None = None, memo: str | Path | None = None) -> str:
    """The version a checkpoint's descriptions are stored under: file stem + first 12 hex of its SHA-256
    + DESCRIPTION_FORMAT.

    Hashing the 25 MB shipped checkpoint costs ~50 ms of every cold query, so the digest is remembered in
    ``memo`` (default: <cache>/models/checkpoint-digests.json) under the file's path, size and mtime; a
    changed file is hashed again. A memo that cannot be read or written is just not used."""
    path = Path(path) if path is not None else shipped_checkpoint()
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if memo is None:
        memo = cache_dir() / "models" / "checkpoint-digests.json"
    memo = Path(memo)
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    hexdigest = known.get(key) if isinstance(known, dict) else None
    if not (isinstance(hexdigest, str) and len(hexdigest) == 64):
        hexdigest = sha256_file(path)
        try:
            known = known if isinstance(known, dict) else {}
            known[key] = hexdigest
            atomic_write(memo, json.dumps(known))
        except OSError:
            pass
    return f"{path.stem}-{hexdigest[:12]}{DESCRIPTION_FORMAT}"
