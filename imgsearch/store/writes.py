"""Row writers of an index run: photos, their captions/tags/cells, failures, index runs, BM25 documents.

Each takes the caller's session (one transaction: the caller's) and plain values, and returns what
the caller needs (a new photo id, the BM25 document to upsert). Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Sequence

from sqlalchemy import delete, select, update

from imgsearch import places
from imgsearch.search import bm25
from imgsearch.store.models import (TAG_KINDS, Caption, IndexRun, Photo, PhotoCells, PhotoTerms, pack_terms,
                                    pack_vector, unpack_terms)
from imgsearch.text.normalize import NORMALIZER_VERSION

if TYPE_CHECKING:  # pragma: no cover
    from imgsearch.indexer.report import IndexReport

CaptionRow = tuple[int, str, float]   # (rank, text, score)
TagRow = tuple[str, str, float]       # (kind 'tag' | 'region' | 'keyword', term, score)
Document = tuple[int, str]            # (photo id, BM25 document text)

#: What a shard row made by a Ray worker holds of its photo's derived rows (derived_rows: the packed terms and the
#: BM25 document without the place), so that the one ingest on the library's machine need not make them; the
#: ingest takes them only from rows of this version (cluster/bulk.bulk_rows), else makes them itself. Bump the
#: leading number when term_rows, pack_terms or document_terms_of change what they make (the normalizer's own
#: version is part of it).
DERIVED_VERSION = f"1+{NORMALIZER_VERSION}"


@dataclass
class Description:
    """What the captioner said about one photo, ready to store."""

    captions: list[tuple[str, float]]    # n-best (text, score), best first
    tags: list[tuple[str, float]]
    keywords: list[str]
    caption_embedding: bytes | None
    image_embedding: bytes | None
    cells: bytes | None = None           # packed decoder grid cells (re-ranking), see model/rerank.py
    labels: "Labels | None" = None       # zero-shot labels (model/labels.py)


@dataclass
class Labels:
    """A photo's zero-shot labels, ready to store (model/labels.py)."""

    packed: bytes                        # top classes, packed
    embedding: bytes                     # float32 label vector
    region_tags: list[tuple[str, float]] # tags read off the top classes, minus the photo-level tags
    version: str                         # model/labels.LABELS_VERSION
    visual: bytes | None = None          # float32 visual vector, read off the same head channels (model/visual.py)

    def columns(self) -> dict:
        return {"labels": self.packed, "label_embedding": self.embedding, "labels_version": self.version,
                "visual_embedding": self.visual}


NO_LABELS = {"labels": None, "label_embedding": None, "labels_version": None, "visual_embedding": None}


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _parse_taken(v) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        return None


def stat_values(info: dict) -> dict:
    """The photo columns a decode worker's ``info`` fills in."""
    return {
        "size": info["size"],
        "mtime_ns": info["mtime_ns"],
        "content_hash": info["content_hash"],
        "width": info.get("width"),
        "height": info.get("height"),
        "taken_at": _parse_taken(info.get("taken_at")),
        **(info.get("place_values") or place_values(info["gps"]) if "gps" in info else {}),
    }


def resolve_places(infos: Iterable[dict]) -> None:
    """Look up the places of decoded files (``info["gps"]``) before the write transaction that stores them:
    the first look-up of a process loads the gazetteer (~1 s), which should not hold the library's write lock."""
    for info in infos:
        if "gps" in info and "place_values" not in info:
            info["place_values"] = place_values(info["gps"])


def place_values(gps) -> dict:
    """The photo columns of an EXIF GPS position (lat, lon) or None: the position and its nearest place."""
    pos = places.valid_gps(*gps) if gps is not None and len(gps) == 2 else None
    found = places.nearest(*pos) if pos is not None else None
    return {"gps_lat": pos[0] if pos else None, "gps_lon": pos[1] if pos else None,
            "place": found.name if found is not None else None, "places_version": places.PLACES_VERSION}


# ---------------------------------------------------------------------------- BM25 documents

def doc_text(captions: Sequence[str], keywords: Sequence[str], tags: Sequence[str], place: str | None = None) -> str:
    """The BM25 document of a photo: its n-best captions, keywords, tags and place (normalised by bm25)."""
    return " . ".join([*captions, " ".join(keywords), " ".join(tags), *([place] if place else [])])


def document_terms_of(captions: Iterable[str], keywords: Iterable[str], tags: Iterable[str],
                      place: str | None = None) -> str:
    """bm25.document_terms(doc_text(captions, keywords, tags, place)), the stored BM25 document of a photo,
    made in pieces: the captions joined (most are a photo's own), each keyword, tag and place on its own
    (bm25.piece_terms: normalised once a process, as they repeat from photo to photo). The same terms as from
    the whole text, since the pieces are joined by spaces and full stops, which no term spans and which change
    no neighbour's normalisation (tests/test_bm25.py checks it)."""
    pt = bm25.piece_terms
    out = [bm25.document_terms(" . ".join(captions))]
    if not out[0]:
        out.pop()
    out.extend(t for t in map(pt, keywords) if t)
    out.extend(t for t in map(pt, tags) if t)
    if place:
        t = pt(place)
        if t:
            out.append(t)
    return " ".join(out)


def derived_rows(captions: Sequence[str], tags: Iterable[tuple[str, float]], keywords: Iterable[str],
                 region_tags: Iterable[tuple[str, float]]) -> tuple[str | None, str]:
    """(the photo's packed terms, None when it has none; its BM25 document's terms without the place): what a
    Ray worker stores beside a description (DERIVED_VERSION), from the values its shard row holds. The place
    is the library machine's to look up; place_terms appends it to the document."""
    terms = term_rows(tags, keywords, region_tags)
    document = document_terms_of(captions, [t for kind, t, _ in terms if kind == "keyword"],
                                 [t for kind, t, _ in terms if kind != "keyword"])
    return (pack_terms(terms, scores_are_floats=True) if terms else None), document


def place_terms(document: str, place: str | None) -> str:
    """A document's terms made without the place (derived_rows), with it: what document_terms_of makes with it."""
    t = bm25.piece_terms(place) if place else ""
    return f"{document} {t}" if document and t else document or t


def _document(photo_id: int, captions: Sequence[CaptionRow], tags: Sequence[TagRow], place: str | None = None) -> Document:
    return photo_id, doc_text([t for _, t, _ in captions], [t for k, t, _ in tags if k == "keyword"],
                              [t for k, t, _ in tags if k != "keyword"], place)


def _place(s, photo_id: int) -> str | None:
    return s.execute(select(Photo.place).where(Photo.id == photo_id)).scalar()


def rebuild_search_text(session) -> int:
    """Rewrite every BM25 document from the stored captions/keywords/tags (one transaction: the caller's)."""
    bm25.ensure_fts(session)
    bm25.clear(session)
    caps: dict[int, list[str]] = {}
    for pid, text in session.execute(
        select(Caption.photo_id, Caption.text).join(Photo, Photo.id == Caption.photo_id)
        .where(Photo.error.is_(None)).order_by(Caption.photo_id, Caption.rank)
    ):
        caps.setdefault(pid, []).append(text)
    kw: dict[int, list[str]] = {}
    tg: dict[int, list[str]] = {}
    for pid, packed in session.execute(select(PhotoTerms.photo_id, PhotoTerms.terms)):
        for kind, term, _ in unpack_terms(packed):
            (kw if kind == "keyword" else tg).setdefault(pid, []).append(term)
    at_place = dict(session.execute(select(Photo.id, Photo.place).where(Photo.place.is_not(None))).all())
    docs = [(pid, doc_text(c, kw.get(pid, []), tg.get(pid, []), at_place.get(pid))) for pid, c in caps.items()]
    n = bm25.upsert_documents(session, docs)
    bm25.ensure_fts(session, bm25.OCR_TABLE)
    bm25.clear(session, bm25.OCR_TABLE)
    bm25.upsert_documents(session, session.execute(select(Photo.id, Photo.ocr_text).where(
        Photo.error.is_(None), Photo.ocr_text.is_not(None), Photo.ocr_text != "")).all(), bm25.OCR_TABLE)
    return n


# ---------------------------------------------------------------------------- photos

def upsert_photo(s, path: str, photo_id: int | None, info: dict, at: datetime) -> int:
    """Update the stat of the row ``photo_id``, or insert a row for ``path``; returns the photo id."""
    if photo_id is not None:
        update_stat(s, photo_id, info)
        return photo_id
    p = Photo(path=path, folder=os.path.dirname(path), indexed_at=at, **stat_values(info))
    s.add(p)
    s.flush()
    return p.id


def update_stat(s, photo_id: int, info: dict) -> None:
    """The stat (and EXIF facts) of a stored photo; a described photo whose place changed (one from before places,
    touched: same content, new mtime) gets its BM25 document rewritten with the place words."""
    before = _place(s, photo_id) if "gps" in info else None
    vals = stat_values(info)
    s.execute(update(Photo).where(Photo.id == photo_id).values(**vals))
    if "place" in vals and vals["place"] != before and s.execute(
            select(Photo.caption).where(Photo.id == photo_id, Photo.error.is_(None))).scalar() is not None:
        bm25.upsert_documents(s, [stored_document(s, photo_id)])


def move_photo(s, photo_id: int, path: str, info: dict) -> None:
    """Re-point the row ``photo_id`` at ``path`` (its description stays)."""
    s.execute(update(Photo).where(Photo.id == photo_id).values(
        path=path, folder=os.path.dirname(path), **stat_values(info)))


def replace_terms(s, photo_id: int, captions: Sequence[CaptionRow], tags: Sequence[TagRow]) -> None:
    """Replace the photo's captions and tags/keywords (none: just drop them)."""
    s.execute(delete(Caption).where(Caption.photo_id == photo_id))
    if captions:
        s.execute(Caption.__table__.insert(), [
            {"photo_id": photo_id, "rank": r, "text": t, "score": sc} for r, t, sc in captions])
    set_terms(s, photo_id, tags)


def read_terms(s, photo_id: int) -> list[TagRow]:
    """The photo's tag rows (kind, term, score) in their stored order."""
    return unpack_terms(s.execute(select(PhotoTerms.terms).where(PhotoTerms.photo_id == photo_id)).scalar())


def set_terms(s, photo_id: int, tags: Sequence[TagRow]) -> None:
    """Replace the photo's tags/keywords/region tags (none: drop them): its one photo_terms row."""
    if any(k not in TAG_KINDS for k, _, _ in tags):   # checked before anything is written
        raise ValueError(f"a tag row's kind must be one of {TAG_KINDS}: {sorted({k for k, _, _ in tags})}")
    s.execute(delete(PhotoTerms).where(PhotoTerms.photo_id == photo_id))
    if tags:
        s.execute(PhotoTerms.__table__.insert(), [{"photo_id": photo_id, "terms": pack_terms(tags)}])


def set_cells(s, photo_id: int, data: bytes | None) -> None:
    """Replace (or, with None, drop) the photo's re-ranking cells."""
    s.execute(delete(PhotoCells).where(PhotoCells.photo_id == photo_id))
    if data is not None:
        s.execute(PhotoCells.__table__.insert(), [{"photo_id": photo_id, "data": data}])


def description_rows(d: Description) -> tuple[list[CaptionRow], list[TagRow]]:
    """The caption rows (rank, text, score) and tag rows (kind, term, score) of a description: a tag's best
    score, then its keywords, then its region tags (a term already there keeps its row)."""
    region = d.labels.region_tags if d.labels is not None else ()
    return ([(r, t, float(sc)) for r, (t, sc) in enumerate(d.captions)],
            term_rows(d.tags, d.keywords, region))


def term_rows(tags: Iterable[tuple[str, float]], keywords: Iterable[str],
              region_tags: Iterable[tuple[str, float]]) -> list[TagRow]:
    """The tag rows (kind, term, score) of description_rows, from its three lists (bulk writers call it on
    columns read from Parquet shards without building a Description)."""
    best: dict[str, float] = {}   # a tag's highest score; a keyword or region term's first
    for term, sc in tags:
        sc = float(sc)
        old = best.get(term)
        best[term] = sc if old is None or not old > sc else old
    out = [("tag", t, sc) for t, sc in best.items()]
    out.extend(("keyword", t, 1.0) for t in dict.fromkeys(keywords))
    seen: dict[str, float] = {}
    for term, sc in region_tags:
        if term not in seen:
            seen[term] = float(sc)
    out.extend(("region", t, sc) for t, sc in seen.items())
    return out


def write_description(s, photo_id: int, d: Description, version: str | None, at: datetime) -> Document:
    """Store what the captioner said about the photo; returns its BM25 document."""
    captions, tags = description_rows(d)
    replace_terms(s, photo_id, captions, tags)
    s.execute(update(Photo).where(Photo.id == photo_id).values(
        caption=d.captions[0][0] if d.captions else "",
        model_version=version, error=None, indexed_at=at,
        caption_embedding=d.caption_embedding, image_embedding=d.image_embedding,
        **(d.labels.columns() if d.labels is not None else NO_LABELS),
    ))
    set_cells(s, photo_id, d.cells)
    return _document(photo_id, captions, tags, _place(s, photo_id))


def copy_description(s, src: int, dst: int, at: datetime) -> Document:
    """Give photo ``dst`` the description of photo ``src`` (same content); returns its BM25 document."""
    row = s.execute(select(Photo.caption, Photo.model_version, Photo.caption_embedding, Photo.image_embedding,
                           Photo.labels, Photo.label_embedding, Photo.labels_version, Photo.visual_embedding)
                    .where(Photo.id == src)).one()
    captions = [(c.rank, c.text, c.score) for c in s.execute(select(Caption).where(Caption.photo_id == src)).scalars()]
    tags = read_terms(s, src)
    cells = s.execute(select(PhotoCells.data).where(PhotoCells.photo_id == src)).scalar()
    replace_terms(s, dst, captions, tags)
    s.execute(update(Photo).where(Photo.id == dst).values(
        caption=row.caption, model_version=row.model_version, error=None, indexed_at=at,
        caption_embedding=row.caption_embedding, image_embedding=row.image_embedding,
        labels=row.labels, label_embedding=row.label_embedding, labels_version=row.labels_version,
        visual_embedding=row.visual_embedding,
    ))
    set_cells(s, dst, cells)
    return _document(dst, captions, tags, _place(s, dst))


def write_failure(s, path: str, photo_id: int | None, reason: str, at: datetime, version: str | None = None) -> bool:
    """Record that ``path`` could not be indexed under model ``version`` (kept in ``model_version``: the plan
    retries the file when the version changes); False when the file has vanished since the scan (then it
    is simply gone: its row, if any, is deleted)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if photo_id is not None:
            s.execute(delete(Photo).where(Photo.id == photo_id))  # trigger drops its BM25 document
        return False
    except OSError:
        st = None
    vals = dict(size=st.st_size if st else 0, mtime_ns=st.st_mtime_ns if st else 0, error=reason, caption=None,
                model_version=version, caption_embedding=None, image_embedding=None, indexed_at=at, width=None,
                height=None, taken_at=None, gps_lat=None, gps_lon=None, place=None, places_version=None,
                ocr_text=None, ocr_version=None, **NO_LABELS)
    if photo_id is not None:
        replace_terms(s, photo_id, (), ())
        set_cells(s, photo_id, None)
        s.execute(update(Photo).where(Photo.id == photo_id).values(**vals))
        bm25.delete_documents(s, [photo_id])
        bm25.delete_documents(s, [photo_id], bm25.OCR_TABLE)
    else:
        s.add(Photo(path=path, folder=os.path.dirname(path), **vals))
    return True


def write_labels(s, photo_id: int, labels: Labels) -> Document:
    """Give an already described photo its zero-shot labels (an upgrade that needs no re-captioning): the
    label columns, its region tags; returns its BM25 document, rebuilt from what is stored."""
    kept = [r for r in read_terms(s, photo_id) if r[0] != "region"]
    have = {t for k, t, _ in kept if k == "tag"}
    set_terms(s, photo_id, kept + [("region", t, float(sc)) for t, sc in labels.region_tags if t not in have])
    s.execute(update(Photo).where(Photo.id == photo_id).values(**labels.columns()))
    return stored_document(s, photo_id)


def stored_document(s, photo_id: int) -> Document:
    """The photo's BM25 document, rebuilt from what is stored (captions, tags, place)."""
    captions = [(c.rank, c.text, c.score) for c in s.execute(
        select(Caption).where(Caption.photo_id == photo_id).order_by(Caption.rank)).scalars()]
    return _document(photo_id, captions, read_terms(s, photo_id), _place(s, photo_id))


def write_place(s, photo_id: int, gps) -> Document | None:
    """Give an already described photo its GPS position and place (re-read from its EXIF: an upgrade that needs
    no re-captioning); returns its BM25 document when the place words changed it, else None."""
    before = _place(s, photo_id)
    vals = place_values(gps)
    s.execute(update(Photo).where(Photo.id == photo_id).values(**vals))
    return stored_document(s, photo_id) if vals["place"] != before else None


def write_ocr(s, photo_id: int, text: str | None, version: str | None) -> None:
    """Store the text read in the photo (indexer/ocr.py; None with version None: not read, e.g. its content
    changed and OCR is off) and its document in the text's own BM25 table (only photos with text have one)."""
    s.execute(update(Photo).where(Photo.id == photo_id).values(ocr_text=text, ocr_version=version))
    if text and text.strip():
        bm25.upsert_documents(s, [(photo_id, text)], bm25.OCR_TABLE)
    else:
        bm25.delete_documents(s, [photo_id], bm25.OCR_TABLE)


def copy_ocr(s, src: int, dst: int) -> None:
    """Give photo ``dst`` the text read in photo ``src`` (same content)."""
    text, version = s.execute(select(Photo.ocr_text, Photo.ocr_version).where(Photo.id == src)).one()
    write_ocr(s, dst, text, version)


def remove_photos(s, ids: Sequence[int]) -> None:
    """Delete photos; captions/tags/cells cascade, a trigger drops the BM25 documents."""
    for i in range(0, len(ids), 500):
        s.execute(delete(Photo).where(Photo.id.in_(ids[i:i + 500])))


def write_caption_embeddings(s, pairs: Iterable[tuple[int, object]]) -> None:
    """Replace the caption embeddings of photos: ``(photo id, vector)`` pairs."""
    for pid, v in pairs:
        s.execute(update(Photo).where(Photo.id == pid).values(caption_embedding=pack_vector(v)))


# ---------------------------------------------------------------------------- index runs

def start_run(s, started: datetime, roots: list[str]) -> int:
    run = IndexRun(started_at=started, roots=json.dumps(roots))
    s.add(run)
    s.flush()
    return run.id


def finish_run(s, run_id: int, r: IndexReport, model_version: str | None) -> None:
    s.execute(update(IndexRun).where(IndexRun.id == run_id).values(
        finished_at=now(), model_version=model_version, added=r.added,
        updated=r.updated, moved=r.moved, removed=r.removed, failed=r.failed,
        skipped_unchanged=r.skipped_unchanged, seconds=r.seconds,
    ))
