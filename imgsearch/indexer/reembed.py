"""Keep the stored caption embeddings in step with the text embedder that queries use.

Caption embeddings made by another text embedder (or another caption-vector recipe) are useless to
queries: :func:`refresh_caption_embeddings` re-embeds them all from the stored captions and tags
(cheap next to captioning), in chunks of one transaction each.
"""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import select

from imgsearch.store.db import Store, bump_revision, get_meta, set_meta
from imgsearch.store.models import Caption, Photo, Tag
from imgsearch.store.writes import write_caption_embeddings
from imgsearch.text.caption_vectors import N_BEST, RECIPE, caption_vectors

META_KEY = "text_embedder"


def embedding_version(embedder) -> str:
    """What the stored caption embeddings were made with: the text embedder and the caption-vector recipe."""
    return f"{embedder.version}|{RECIPE}"


def refresh_caption_embeddings(store: Store, get_embedder: Callable[[], Any], chunk: int = 256) -> list[int]:
    """Re-embed every described photo when its caption embedding was made by another embedder or
    recipe (recorded in ``meta``); returns the ids re-embedded. An empty library records nothing:
    its first described batch records the version."""
    with store.session() as s:
        stored = get_meta(s, META_KEY)
        n = s.execute(select(Photo.id).where(Photo.caption.is_not(None)).limit(1)).first()
    if stored is None and n is None:
        return []
    version = embedding_version(get_embedder())
    if stored == version:
        return []
    emb = get_embedder()
    with store.session() as s:
        todo = [pid for (pid,) in s.execute(select(Photo.id).where(Photo.caption.is_not(None),
                                                                    Photo.error.is_(None)).order_by(Photo.id))]
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        caps: dict[int, list[str]] = {pid: [] for pid in part}
        tags: dict[int, list[str]] = {pid: [] for pid in part}
        with store.session() as s:
            for pid, text in s.execute(select(Caption.photo_id, Caption.text)
                                       .where(Caption.photo_id.in_(part), Caption.rank < N_BEST)
                                       .order_by(Caption.photo_id, Caption.rank)):
                caps[pid].append(text)
            for pid, term in s.execute(select(Tag.photo_id, Tag.term)
                                       .where(Tag.photo_id.in_(part), Tag.kind == "tag")
                                       .order_by(Tag.photo_id, Tag.score.desc(), Tag.term)):
                tags[pid].append(term)
            best = dict(s.execute(select(Photo.id, Photo.caption).where(Photo.id.in_(part))).all())
        vecs = caption_vectors(emb, [caps[pid] or [best.get(pid) or ""] for pid in part],
                               [tags[pid] for pid in part])
        with store.write() as s:
            write_caption_embeddings(s, zip(part, vecs))
            bump_revision(s)
    with store.write() as s:
        set_meta(s, META_KEY, version)
    return todo
