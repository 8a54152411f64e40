"""Caption quality on a COCO-style caption file: corpus BLEU-1..4 and CIDEr (COCO caption evaluation)."""
from __future__ import annotations

import time
from pathlib import Path

from imgsearch.errors import UserError


def evaluate_captions(captions: str | Path, images: str | Path, captioner=None, beam: int = 3,
                      batch_size: int = 32, workers: int | None = None, device: str = "auto",
                      limit: int | None = None) -> dict:
    """Caption every image of ``captions`` found in ``images`` and score against its references."""
    from imgsearch.indexer.loader import batches, default_workers
    from .captioner import Captioner
    from .coco import load_captions
    from .metrics import corpus_scores

    refs = load_captions(captions)
    names, references = refs.file_names[:limit], refs.captions[:limit]
    cap = captioner or Captioner.load(device=device)
    paths = [str(Path(images) / n) for n in names]
    hyps: dict[int, str] = {}
    missing: list[str] = []
    t0 = time.time()
    for ok_idx, imgs, _infos, failed in batches(paths, cap.image_size, cap.resize, batch_size,
                                                default_workers() if workers is None else workers):
        missing += [paths[i] for i, _ in failed]
        if imgs is not None:
            for i, d in zip(ok_idx, cap.describe(imgs, beam=beam, n_best=1)):
                hyps[i] = d.caption
    seconds = time.time() - t0
    if not hyps:
        raise UserError(f"none of the {len(paths)} images listed in {captions} could be read from {images}")
    scores = corpus_scores(hyps, {i: references[i] for i in hyps})
    return {**scores, "images": len(hyps), "failed": len(missing), "beam": beam, "model": cap.version,
            "seconds": round(seconds, 2), "images_per_s": round(len(hyps) / seconds, 2),
            "examples": [{"file": names[i], "caption": hyps[i]} for i in sorted(hyps)[:5]]}
