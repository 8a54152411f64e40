"""indexer/runner.py, incremental re-indexing: add, modify, touch, copy, move, delete, model change — rows
and FAISS stay exact."""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from imgsearch import Library
from libtools import check_consistent, make_set, photos, rows, tiny_captioner
from photos import make_photo

KW = dict(batch_size=4, workers=0, progress=False)


def faiss_ids(lib: Library, kind: str = "caption") -> set[int]:
    return set(int(i) for i in lib.caches.vector_index(kind).ids())


def caption_rows(db, pid):
    return rows(db, "SELECT rank, text, score FROM captions WHERE photo_id = ? ORDER BY rank", (pid,))


def tag_rows(db, pid):
    return sorted(rows(db, "SELECT kind, term, score FROM tags WHERE photo_id = ?", (pid,)))


@pytest.fixture(scope="module")
def cap():
    return tiny_captioner(0)


def test_incremental_reindex(tmp_path, cap):
    a, b = tmp_path / "A", tmp_path / "B"
    pa = make_set(a, ["red_circle", "blue_square", "green_triangle", "stripes"], "a")
    pb = make_set(b, ["checker", "sky"], "b")
    db = tmp_path / "lib" / "library.db"
    with Library(db, captioner=cap) as lib:
        calls = []
        r = lib.index([a, b], **dict(KW, progress=lambda done, total: calls.append((done, total))))
        assert (r.added, r.updated, r.moved, r.removed, r.failed, r.skipped_unchanged) == (6, 0, 0, 0, 0, 0)
        assert calls[0] == (0, 6) and calls[-1] == (6, 6) and calls == sorted(calls)
        p0 = photos(db)
        assert set(p0) == {str(p) for p in pa + pb}
        assert all(v[1] is None and v[3] == cap.version for v in p0.values())
        assert rows(db, "SELECT DISTINCT folder FROM photos ORDER BY folder") == [(str(a),), (str(b),)]
        check_consistent(db)
        assert faiss_ids(lib) == {v[0] for v in p0.values()}
        rev = lib.store.revision()

        # nothing changed: nothing re-captioned, revision unchanged
        r = lib.index([a, b], **KW)
        assert (r.added, r.updated, r.moved, r.removed, r.skipped_unchanged) == (0, 0, 0, 0, 6)
        assert photos(db) == p0
        assert lib.store.revision() == rev

        # modify one, touch one (same bytes, new mtime), copy one, move one, delete one
        time.sleep(0.01)
        modified, touched, copied_src, moved_src, deleted = pa[0], pa[1], pa[2], pb[0], pa[3]
        make_photo(modified, kind="gradient", size=(300, 200))
        os.utime(touched, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        copy = a / "sub" / "copy.jpg"
        copy.parent.mkdir()
        shutil.copy(copied_src, copy)
        moved_to = a / "sub" / "moved.jpg"
        old_moved = p0[str(moved_src)]
        old_caps, old_tags = caption_rows(db, old_moved[0]), tag_rows(db, old_moved[0])
        shutil.move(moved_src, moved_to)
        deleted.unlink()

        r = lib.index([a, b], **KW)
        assert (r.added, r.updated, r.moved, r.removed, r.failed) == (1, 1, 1, 1, 0), r
        assert r.skipped_unchanged == 3  # touched (hash unchanged) + green_triangle + sky
        p1 = photos(db)
        assert set(p1) == {str(pa[0]), str(pa[1]), str(pa[2]), str(copy), str(moved_to), str(pb[1])}
        # modified: same row, re-captioned; touched: same row, not re-captioned
        assert p1[str(modified)][0] == p0[str(modified)][0] and p1[str(modified)][4] != p0[str(modified)][4]
        assert p1[str(touched)] == p0[str(touched)]
        assert rows(db, "SELECT mtime_ns FROM photos WHERE path = ?", (str(touched),))[0][0] == \
            os.stat(touched).st_mtime_ns
        # moved: same id, captions/tags/embedding kept, path + folder updated
        assert p1[str(moved_to)][0] == old_moved[0]
        assert caption_rows(db, old_moved[0]) == old_caps and tag_rows(db, old_moved[0]) == old_tags
        assert rows(db, "SELECT folder FROM photos WHERE id = ?", (old_moved[0],)) == [(str(a / "sub"),)]
        # copy: a new row carrying the source's descriptions
        src_id, copy_id = p1[str(copied_src)][0], p1[str(copy)][0]
        assert copy_id not in {v[0] for v in p0.values()}
        assert [c[1:] for c in caption_rows(db, copy_id)] == [c[1:] for c in caption_rows(db, src_id)]
        # deleted: gone with its captions and tags, everywhere
        gone_id = p0[str(deleted)][0]
        assert caption_rows(db, gone_id) == [] and tag_rows(db, gone_id) == []
        check_consistent(db)
        assert faiss_ids(lib) == {v[0] for v in p1.values()}
        assert lib.store.revision() > rev

        # indexing folder A only never removes photos of folder B
        (b / pb[1].name).unlink()
        r = lib.index([a], **KW)
        assert r.removed == 0 and str(pb[1]) in photos(db)
        # B is now empty: an unmounted drive looks like this, so its photos are kept ...
        r = lib.index([b], **KW)
        assert r.removed == 0 and str(pb[1]) in photos(db)
        assert r.kept == [(str(b), 1)] and not r.errors
        # ... unless asked
        r = lib.index([b], prune_empty=True, **KW)
        assert r.removed == 1 and str(pb[1]) not in photos(db)
        assert faiss_ids(lib) == {v[0] for v in photos(db).values()}
        rev = lib.store.cache_key()

    # the FAISS file on disk was updated in place with the final revision: a new process loads it as is
    from imgsearch.paths import captions_faiss_path
    from imgsearch.search.dense import VectorIndex

    vi = VectorIndex.load(captions_faiss_path(db))
    assert vi.revision == rev
    assert set(int(i) for i in vi.ids()) == {v[0] for v in photos(db).values()}


def test_move_across_roots_and_model_change(tmp_path, cap):
    a, b = tmp_path / "A", tmp_path / "B"
    pa = make_set(a, ["red_circle", "sky", "checker"], "a")
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([a], **KW)
        before = photos(db)
        # a photo moved out of the indexed folder into another one, then only B is indexed
        b.mkdir()
        shutil.move(pa[0], b / "x.jpg")
        r = lib.index([b], **KW)
        assert (r.added, r.moved) == (0, 1)
        assert photos(db)[str(b / "x.jpg")][0] == before[str(pa[0])][0]

    # another text embedder version: caption embeddings are redone, captions are not
    from imgsearch.store.db import get_meta, set_meta

    with Library(db, captioner=cap) as lib:
        from sqlalchemy import select, update

        from imgsearch.store.models import Caption, Photo, Tag, pack_vector
        from imgsearch.text.caption_vectors import RECIPE, caption_vectors

        with lib.store.write() as s:
            set_meta(s, "text_embedder", "some-older-embedder")
            s.execute(update(Photo).values(caption_embedding=pack_vector(np.zeros(384))))
        rev, p_before = lib.store.revision(), photos(db)
        r = lib.index([a, b], **KW)
        assert (r.added, r.updated, r.skipped_unchanged) == (0, 0, 3)
        assert photos(db) == p_before
        with lib.store.session() as s:
            assert get_meta(s, "text_embedder") == f"{lib.embedder().version}|{RECIPE}"
            for pid, blob in s.execute(select(Photo.id, Photo.caption_embedding)).all():
                caps = [t for (t,) in s.execute(select(Caption.text).where(Caption.photo_id == pid)
                                                .order_by(Caption.rank)).all()][:3]
                tags = [t for (t,) in s.execute(select(Tag.term).where(Tag.photo_id == pid, Tag.kind == "tag")
                                                .order_by(Tag.score.desc(), Tag.term)).all()]
                want = caption_vectors(lib.embedder(), [caps], [tags])[0]
                np.testing.assert_allclose(np.frombuffer(blob, dtype="<f4"), want, atol=1e-5)
        assert lib.store.revision() > rev

    # another model version: every good photo is re-captioned, ids kept
    cap1 = tiny_captioner(1)
    with Library(db, captioner=cap1) as lib:
        r = lib.index([a, b], **KW)
        assert (r.added, r.updated, r.skipped_unchanged) == (0, 3, 0)
        after = photos(db)
        assert {v[0] for v in after.values()} == {v[0] for v in before.values()}
        assert {v[3] for v in after.values()} == {cap1.version}
        check_consistent(db)
        st = lib.status()
        assert st["photos"] == 3 and st["model_versions"] == {cap1.version: 3}
        assert st["last_index"]["updated"] == 3


def test_one_index_run_at_a_time(tmp_path, cap):
    from imgsearch.errors import StoreError
    from imgsearch.indexer.lock import index_lock

    make_set(tmp_path / "A", ["red_circle"], "a")
    with Library(tmp_path / "library.db", captioner=cap) as lib:
        with index_lock(lib.path):  # as if another process were indexing
            with pytest.raises(StoreError, match="another `imgsearch index` is running"):
                lib.index([tmp_path / "A"], **KW)
        assert lib.index([tmp_path / "A"], **KW).added == 1
