"""Copies of a photo: exact copies (the same content hash) and near-duplicates (the same look).

* In results (:class:`Collapse`, used by the query engine as it makes hits): photos with the same
  ``photos.content_hash`` are one hit, at the rank of the best-ranked of them, listing the others in
  ``Hit.copies``. The hit is the copy indexed first (lowest id) among those the query may return (under
  the asked folder ``--in``, within its filters), whichever copy ranked best; a copy that is a failed row
  or whose file is gone is not listed. Whether a ranked photo is shown or folded into an earlier hit
  depends only on the photos ranked above it, so the first n hits of k=n are the first n of any larger k,
  and the engine keeps reading the ranking until k distinct photos are found.
* :func:`exact_groups` — every group of two or more good photos with the same content hash.
* :func:`near_groups` — groups of photos that look the same: resized, re-encoded, slightly cropped or
  brightened copies. Two photos are linked when the cosine of their visual vectors (photos.visual_embedding,
  model/visual.py; each photo's nearest :data:`NEAR_NEIGHBOURS` looked up in the "visual" FAISS cache) is
  at least :data:`NEAR_THRESHOLD` and the correlation of their layouts (:func:`layout`: a 16×16 colour
  image, read from the files of the linked photos only, nothing stored) at least :data:`LAYOUT_THRESHOLD`:
  the visual vector is pooled over the photo and cannot tell the same things in other places apart. A
  group is a connected set of links.

:data:`NEAR_THRESHOLD` and :data:`LAYOUT_THRESHOLD` were measured by bench/near_duplicates.py
(bench/results/near_duplicates.txt): the four edits the tests make, against distinct real (Flickr8k, COCO)
and drawn photos. On the real photos the visual cosine alone cannot separate them (copies down to 0.64,
different photos up to 0.79), the layout alone can; on drawn shapes neither fully can.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

NEAR_THRESHOLD = 0.70     # visual cosine from which two photos may be near-duplicates (see the module docstring)
LAYOUT_THRESHOLD = 0.95   # ... and the correlation of their layouts (:func:`layout`) from which they are
NEAR_NEIGHBOURS = 16      # neighbours looked up per photo (a group can still be larger: links chain)
LAYOUT_SIDE = 16          # the layout's grid: LAYOUT_SIDE × LAYOUT_SIDE RGB cells
LAYOUT_SHIFTS = (0.0, 0.5, 1.0)   # where the 95 % windows of a layout lie (share of the 5 % margin), per axis


def layout(path: str | os.PathLike) -> np.ndarray | None:
    """Where a photo has which colours: its RGB image (EXIF-rotated) averaged over a LAYOUT_SIDE² grid, minus
    its mean (over all cells and channels, so colour stays), L2-normalised — row 0 of the whole photo, rows
    1-9 of its nine 95 % windows (corners, edges, centre) — float32 (10, 3·LAYOUT_SIDE²);
    :func:`layout_match` compares two. The visual vector is pooled over the whole photo, so it cannot tell
    two photos of the same things in other places apart (a red disc left or right); this can, and a resize,
    re-encoding, 5 % crop or brightness change moves it little. None when the file cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (LAYOUT_SIDE * 8, LAYOUT_SIDE * 8))      # JPEG: decode at 1/8 when that is enough
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.load()
    except Exception:  # noqa: BLE001 - an unreadable file is just not compared
        return None
    w, h = im.size
    boxes = [(0.0, 0.0, w, h)] + [(fx * 0.05 * w, fy * 0.05 * h, fx * 0.05 * w + 0.95 * w, fy * 0.05 * h + 0.95 * h)
                                  for fy in LAYOUT_SHIFTS for fx in LAYOUT_SHIFTS]
    rows = np.stack([np.asarray(im.resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.BOX, box=b), dtype=np.float32).reshape(-1)
                     for b in boxes])
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def layout_match(a: np.ndarray, b: np.ndarray) -> float:
    """How well two layouts agree: the best correlation of one whole photo with the other whole, or with one of
    the other's 95 % windows (so a photo and a 5 % crop of it match)."""
    return float(max((a[0] @ b.T).max(), (b[0] @ a.T).max()))


# ---------------------------------------------------------------------------- collapsing hits

class Collapse:
    """What one query has shown so far, to fold exact copies into one hit (see the module docstring).
    ``allowed``: the ids the query may return (its folder and filters; None: any) — the hit is one of them."""

    def __init__(self, allowed: set[int] | None = None):
        self.allowed = allowed
        self.shown: set[int] = set()          # the lowest id of each group shown (a group's key)

    def take(self, pid: int, path: str, group: list[tuple[int, str]] | None):
        """For the ranked photo ``pid`` (at ``path``; ``group``: its good copies, itself included, by id, from
        store.hot_reads.copy_groups): None if it is folded into an earlier hit or no copy of it exists on disk,
        else (hit id, hit path, the other copies' paths)."""
        if not group:
            return (pid, path, []) if os.path.exists(path) else None
        key = group[0][0]
        if key in self.shown:
            return None
        self.shown.add(key)
        alive = [(i, p) for i, p in group if os.path.exists(p)]
        ok = [m for m in alive if self.allowed is None or m[0] in self.allowed]   # never a hit outside --in
        if not ok:
            return None
        hid, hpath = ok[0]                    # the group is by id: the copy indexed first
        return hid, hpath, [p for i, p in alive if i != hid]


# ---------------------------------------------------------------------------- duplicate groups

@dataclass
class GroupPhoto:
    id: int
    path: str
    similarity: float         # visual cosine with the group's first photo (1.0: the same file content)
    exact: bool               # the same content hash as the group's first photo
    width: int | None = None
    height: int | None = None
    size: int | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "similarity": round(float(self.similarity), 4),
                "exact": self.exact, "width": self.width, "height": self.height, "size": self.size}


@dataclass
class DuplicateGroup:
    """Photos that are copies of one another, the one to keep first: for exact groups the one indexed
    first, for near groups the largest (pixels, then bytes), then the one indexed first."""
    kind: str                 # "exact" (one content) | "near" (more than one content, the same look)
    photos: list[GroupPhoto] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.photos]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "count": len(self.photos), "photos": [p.to_dict() for p in self.photos]}


def exact_groups(store, folder: str | None = None) -> list[DuplicateGroup]:
    """Groups of two or more good photos (at or below ``folder``) with the same content whose files exist,
    the largest groups first, then by the first photo's path."""
    from imgsearch.store import queries

    out = []
    for rows in queries.same_hash_groups(store, folder):
        rows = [r for r in rows if os.path.exists(r.path)]
        if len(rows) >= 2:
            out.append(DuplicateGroup("exact", [_photo(r, 1.0, True) for r in rows]))
    out.sort(key=lambda g: (-len(g.photos), g.photos[0].path))
    return out


def near_groups(store, caches, folder: str | None = None, threshold: float | None = None,
                layout_threshold: float | None = None) -> list[DuplicateGroup]:
    """Groups of photos (at or below ``folder``) that look the same: linked when their visual vectors' cosine
    is at least ``threshold`` (default :data:`NEAR_THRESHOLD`) and their layouts' correlation (:func:`layout`,
    read from the files of those photos only) at least ``layout_threshold`` (:data:`LAYOUT_THRESHOLD`); exact
    copies included. Photos without a visual vector (indexed before it was stored: ``imgsearch index`` adds
    it) or whose file is gone are not compared. Largest groups first."""
    from imgsearch.errors import UserError
    from imgsearch.store import queries
    from imgsearch.store import vectors as stored

    t = NEAR_THRESHOLD if threshold is None else float(threshold)
    lt = LAYOUT_THRESHOLD if layout_threshold is None else float(layout_threshold)
    if not (-1.0 <= t <= 1.0 and -1.0 <= lt <= 1.0):
        raise UserError(f"a near-duplicate threshold is a cosine, between -1 and 1, not {threshold}")
    allowed = sorted(queries.ids_under(store, folder)) if folder is not None else None
    vi = caches.vector_index("visual")
    if len(vi) == 0 or allowed == []:
        return []
    k = min(NEAR_NEIGHBOURS + 1, len(vi))
    pairs: list[tuple[int, int, float]] = []
    for ids, vecs in stored.iter_vectors(store, "visual", allowed, chunk=2048):
        found, scores = vi.search(vecs, k, allowed_ids=None if allowed is None else np.asarray(allowed))
        for a, row, srow in zip(ids.tolist(), found, scores):
            pairs += [(a, b, s) for b, s in zip(row.tolist(), srow.tolist()) if b > a and s >= t]
    rows = {r.id: r for r in queries.duplicate_rows(store, sorted({i for p in pairs for i in p[:2]}))}
    rows = {i: r for i, r in rows.items() if os.path.exists(r.path)}
    layouts: dict[int, np.ndarray | None] = {}

    def looks(i: int):
        if i not in layouts:
            layouts[i] = layout(rows[i].path)
        return layouts[i]

    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _s in pairs:
        if a not in rows or b not in rows:
            continue
        same = rows[a].content_hash is not None and rows[a].content_hash == rows[b].content_hash
        if not same:
            la, lb = looks(a), looks(b)
            if la is None or lb is None or layout_match(la, lb) < lt:
                continue
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(find(i), []).append(i)
    out = []
    for g in members.values():
        if len(g) < 2:
            continue
        got = sorted((rows[i] for i in g), key=lambda r: (-((r.width or 0) * (r.height or 0)), -(r.size or 0), r.id))
        first = got[0]
        vecs = {r.id: np.frombuffer(r.visual_embedding, dtype="<f4") for r in got}

        def exact(r) -> bool:
            return r.content_hash is not None and r.content_hash == first.content_hash

        out.append(DuplicateGroup("exact" if all(exact(r) for r in got) else "near",
                                  [_photo(r, 1.0 if exact(r) else float(vecs[r.id] @ vecs[first.id]), exact(r))
                                   for r in got]))
    out.sort(key=lambda g: (-len(g.photos), g.photos[0].path))
    return out


def _photo(r, similarity: float, exact: bool) -> GroupPhoto:
    return GroupPhoto(r.id, r.path, similarity, exact, getattr(r, "width", None), getattr(r, "height", None),
                      getattr(r, "size", None))
