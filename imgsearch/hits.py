"""What a query returns: one :class:`Hit` per photo, best first."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Hit:
    path: str                 # absolute
    score: float
    caption: str
    keywords: list[str]
    id: int
    tags: list[str] = field(default_factory=list)
    rank: int = 0

    def to_dict(self) -> dict:
        return {
            "rank": self.rank, "score": self.score, "path": self.path, "caption": self.caption,
            "keywords": list(self.keywords), "tags": list(self.tags), "id": self.id,
        }
