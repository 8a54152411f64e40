"""What a vector index of a given size should be: its type, its IVF cell count, how deep an IVF-PQ search re-ranks.

Each choice is a measurement on 2 cores (bench/README.md, README "Libraries of millions of photos"):

  * type: exact ("flat") below IVF_MIN vectors, IVF-SQ8 from there, IVF-PQ from PQ_MIN, each with hysteresis so
    that a library hovering around a bound is not rebuilt back and forth (choose_index_type);
  * cells: the power of two nearest 2·√N (ivf_nlist: 2,048 at 1M, 8,192 at 10M; 1,024 at 1M built faster but each
    search scanned 1.5× the vectors: bench/ivf_cells.py);
  * re-rank depth of IVF-PQ (pq_rerank): PQ scores are coarse, so a search re-scores its top candidates with their
    exact vectors. How many it needs grows with how many near-identical photos compete for the top 10, and so with
    the library: on bench/ivfpq.py's near-duplicate library, 200 gave recall@10 0.984 at 1M but 0.942 at 10M,
    where 400 gave 0.977 (13.2 → 14.6 ms a search). So PQ_RERANK at least, and one more per PQ_RERANK_PER
    vectors.
"""
from __future__ import annotations

import math

IVF_TYPES = ("ivfsq8", "ivfpq")
IVF_MIN = 200_000         # a flat index of this many vectors becomes IVF-SQ8 (at the next save)...
FLAT_MAX = 100_000        # ...and an IVF index shrunk below this becomes flat again (hysteresis)
PQ_MIN = 2_000_000        # an index of this many vectors becomes IVF-PQ (~104 B per vector instead of ~392)...
PQ_KEEP = 1_500_000       # ...and stays IVF-PQ down to this many (hysteresis), below which it is IVF-SQ8 again
PQ_RERANK = 200           # IVF-PQ candidates re-scored with their exact vectors, at least (1M: recall@10 0.984)...
PQ_RERANK_PER = 25_000    # ...and one per this many vectors above 5M (10M: 400, recall@10 0.977; 200: 0.942)


def choose_index_type(count: int, current: str | None = None) -> str:
    """The index type for ``count`` vectors; ``current`` is kept inside the hysteresis bands
    (flat / IVF-SQ8 between FLAT_MAX and IVF_MIN, IVF-PQ down to PQ_KEEP)."""
    if count >= PQ_MIN or (current == "ivfpq" and count >= PQ_KEEP and count >= FLAT_MAX):
        return "ivfpq"
    if count >= IVF_MIN:
        return "ivfsq8"
    if count < FLAT_MAX:
        return "flat"
    return current if current == "flat" else "ivfsq8" if current in IVF_TYPES else "flat"


def ivf_nlist(count: int) -> int:
    """Number of IVF cells for ``count`` vectors: the power of two nearest 2·√count (at least 64)."""
    target = max(64.0, 2.0 * math.sqrt(max(count, 1)))
    return 1 << int(round(math.log2(target)))


def pq_rerank(count: int) -> int:
    """How many candidates an IVF-PQ search of ``count`` vectors re-scores with their exact vectors."""
    return max(PQ_RERANK, int(count) // PQ_RERANK_PER)
