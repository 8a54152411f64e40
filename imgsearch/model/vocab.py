"""Caption vocabulary: words seen at least ``min_count`` times in the training captions,
plus the four special tokens. Tokenisation is imgsearch.text.normalize.tokenize — the same
normalisation the search side uses."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from imgsearch.text.normalize import tokenize

PAD, BOS, EOS, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


@dataclass
class Vocab:
    words: list[str]  # index → word; the first four are SPECIALS

    def __post_init__(self):
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError("a vocabulary must start with the special tokens " + ", ".join(SPECIALS))
        self.index = {w: i for i, w in enumerate(self.words)}

    pad, bos, eos, unk = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, captions, min_count: int = 5) -> "Vocab":
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def encode(self, caption: str, max_len: int) -> list[int]:
        """<start> w1 … wn <end>, with at most ``max_len`` words."""
        ids = [self.index.get(w, self.unk) for w in tokenize(caption)][:max_len]
        return [self.bos, *ids, self.eos]

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i in (self.pad, self.bos):
                continue
            out.append(self.words[i])
        return " ".join(out)
