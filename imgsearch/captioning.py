"""Caption photos without indexing them (``imgsearch caption``)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Iterable


@dataclass
class CaptionResult:
    path: str                                        # absolute
    caption: str = ""                                # best caption
    captions: list[dict] = field(default_factory=list)   # n-best: [{"caption", "score"}]
    tags: list[dict] = field(default_factory=list)       # [{"tag", "score"}]
    keywords: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def caption_files(paths: Iterable[str | os.PathLike], captioner=None, beam: int = 3, n_best: int = 3,
                  batch_size: int = 32, workers: int | None = None, device: str = "auto",
                  on_error=None) -> list[CaptionResult]:
    """Caption every photo under ``paths`` (files or folders). A bad file gets ``error`` set; the rest go on."""
    from imgsearch.indexer.loader import batches, default_workers
    from imgsearch.indexer.scan import scan
    from imgsearch.model.captioner import Captioner

    files = sorted({e.path for e in scan(list(paths), on_error=on_error)})
    if not files:
        return []
    cap = captioner or Captioner.load(device=device)
    workers = default_workers() if workers is None else workers
    results = [CaptionResult(path=p) for p in files]
    for ok_idx, images, _infos, failed in batches(files, cap.image_size, cap.resize, batch_size,
                                                   min(workers, len(files) // batch_size + 1)):
        for i, info in failed:
            results[i].error = info.get("error", "cannot decode")
        if images is None:
            continue
        for i, d in zip(ok_idx, cap.describe(images, beam=beam, n_best=n_best)):
            r = results[i]
            r.caption = d.caption
            r.captions = [{"caption": c, "score": s} for c, s in d.captions]
            r.tags = [{"tag": t, "score": round(float(s), 4)} for t, s in d.tags]
            r.keywords = d.keywords
    return results
