"""Text→image retrieval quality of a whole library (``imgsearch evaluate-retrieval``).

Indexes the images of a COCO-style caption file into a library, uses every reference caption as a
query, and reports Recall@1/5/10 and the median rank of the photo the caption was written for —
per search mode, through the same query path users call.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np


def recall_from_ranks(ranks: list[int], ks=(1, 5, 10)) -> dict:
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": float((r <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["queries"] = int(len(r))
    return out


def evaluate_retrieval(captions: str | Path, images: str | Path, modes=("bm25", "dense", "hybrid"),
                       library: str | Path | None = None, captioner=None, limit: int | None = None,
                       queries_per_image: int | None = None, batch_size: int = 32, device: str = "auto",
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Index ``images`` (into ``library`` or a temporary one) and score every reference caption as a query.
    ``progress``: called with (photos done, total) while indexing (the CLI passes its progress bar's).

    Returns {"images": N, "queries": M, "modes": {mode: {"R@1", "R@5", "R@10", "median_rank"}}, "index_seconds"}.
    A caption whose photo is not in the top N (every photo) counts as rank N + 1.
    """
    from imgsearch.library import Library
    from imgsearch.model.coco import load_captions

    refs = load_captions(captions)
    names, references = refs.file_names[:limit], refs.captions[:limit]
    paths = [str((Path(images) / n).resolve()) for n in names]
    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-") as tmp:
        db = Path(library) if library else Path(tmp) / "library.db"
        with Library(db, device=device, captioner=captioner) as lib:
            t0 = time.time()
            report = lib.index(paths, batch_size=batch_size, progress=progress or None)
            index_seconds = time.time() - t0
            n = len(paths)
            results = {}
            for mode in modes:
                ranks = []
                for path, caps in zip(paths, references):
                    for q in caps[:queries_per_image]:
                        hits = lib.query(q, k=n, mode=mode)
                        found = next((h.rank for h in hits if h.path == path), n + 1)
                        ranks.append(found)
                results[mode] = recall_from_ranks(ranks)
    return {"images": len(paths), "indexed": report.added + report.updated + report.moved,
            "failed": report.failed, "index_seconds": round(index_seconds, 1), "modes": results}
