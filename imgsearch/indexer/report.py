"""What one index run did: the counts and this run's errors (returned by ``Library.index``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    skipped_unchanged: int = 0
    labelled: int = 0          # described photos that only got their zero-shot labels (an upgrade)
    placed: int = 0            # described photos that only got their place from their EXIF GPS (an upgrade)
    text_read: int = 0         # photos whose text was read by OCR (index --ocr), with or without text found
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run only
    kept: list[tuple[str, int]] = field(default_factory=list)    # (folder, photos): not found, kept (folder
                                                                 # missing or empty: an unmounted drive?)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "failed": self.failed,
            "skipped_unchanged": self.skipped_unchanged,
            "labelled": self.labelled,
            "placed": self.placed,
            "text_read": self.text_read,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
            "kept": [{"folder": f, "photos": n} for f, n in self.kept],
            "seconds": round(self.seconds, 3),
        }
