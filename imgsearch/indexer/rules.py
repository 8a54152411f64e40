"""What to do with each decoded file of a batch, decided from its content hash. Pure: no SQLite, no torch.

For each decoded file, the first rule that applies wins:

1. **moved**: a *new* path whose content equals a stored photo whose file is gone: that row is
   re-pointed at the new path (id, captions, tags, embeddings kept), and re-described only if it
   was not described by this model version;
2. **touch**: a *changed* file whose content hash did not change and that is already described
   by this model version: only its stat is updated;
3. **copy**: content equal to another photo already described by this model version (a copy, or
   a changed file reverted to known content): that photo's description is copied;
4. **describe**: everything else is captioned.

A stored photo claimed by a move (in this batch or an earlier one) is never a candidate again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, NamedTuple, Protocol, Sequence


class Stored(Protocol):
    """A stored photo with this content (a :class:`StoredPhoto` or a SQLAlchemy row of those columns)."""

    id: int
    path: str
    model_version: str | None
    error: str | None
    caption: str | None


class StoredPhoto(NamedTuple):
    id: int
    path: str
    model_version: str | None
    error: str | None
    caption: str | None


class Decoded(NamedTuple):
    """One decoded file of the batch."""

    path: str
    reason: str            # why it is in the work list: "new" | "changed" | "stale" | "retry"
    photo_id: int | None   # the row at this path, if any
    content_hash: str


class Move(NamedTuple):
    pos: int               # position of the file in the batch
    old_id: int            # the row re-pointed at the file's path
    old_path: str


class Copy(NamedTuple):
    pos: int
    src_id: int            # the photo whose description is copied


@dataclass
class Decisions:
    moves: list[Move] = field(default_factory=list)
    touches: list[int] = field(default_factory=list)    # positions
    copies: list[Copy] = field(default_factory=list)
    describe: list[int] = field(default_factory=list)   # positions to caption, moved ones included, in order

    @property
    def claimed(self) -> set[int]:
        return {m.old_id for m in self.moves}


def is_described(row: Stored, version: str | None) -> bool:
    """The row holds a usable description by model ``version``."""
    return row.error is None and row.model_version == version and bool(row.caption)


def needs_redescribing(row: Stored, version: str | None) -> bool:
    """A moved row is captioned again unless it was described by ``version``. (Unlike
    :func:`is_described`, an empty best caption counts as described here, as it always has.)"""
    return row.error is not None or row.model_version != version or row.caption is None


def retry_failure(row: Stored, version: str | None) -> bool:
    """An unchanged file that failed before is tried again when it failed under another model version than
    ``version`` (a failure recorded before versions were kept counts as another version): the model may be
    what failed, or may read the file another way. Otherwise it waits until it changes (or ``--retry-failed``)."""
    return row.error is not None and row.model_version != version


def decide(files: Sequence[Decoded], by_hash: Mapping[str, Sequence[Stored]], version: str | None,
           claimed: Collection[int], file_gone: Callable[[str], bool]) -> Decisions:
    """Apply the rules to ``files`` in order. ``by_hash``: the stored photos with each content hash;
    ``claimed``: ids already claimed by moves earlier in the run (not changed: the ids this batch
    claims are :attr:`Decisions.claimed`); ``file_gone(path)``: whether a stored photo's file is gone."""
    out = Decisions()
    taken = set(claimed)
    for pos, f in enumerate(files):
        same = by_hash.get(f.content_hash, ())
        cands = [r for r in same if r.path != f.path and r.id not in taken]
        if f.photo_id is None:
            gone = next((r for r in cands if file_gone(r.path)), None)
            if gone is not None:
                taken.add(gone.id)
                out.moves.append(Move(pos, gone.id, gone.path))
                if needs_redescribing(gone, version):
                    out.describe.append(pos)
                continue
        if f.reason == "changed":
            own = next((r for r in same if r.id == f.photo_id), None)
            if own is not None and is_described(own, version):
                out.touches.append(pos)
                continue
        good = next((r for r in cands if is_described(r, version)), None)
        if good is not None:
            out.copies.append(Copy(pos, good.id))
            continue
        out.describe.append(pos)
    return out
