"""Issue 13, managing a library: `forget` (photos or folders, present or not), `prune` (photos whose files are
gone, even under a folder that is gone itself) and `index --verify` (a photo replaced by another with the same
size and mtime). Real SQLite, FAISS, BM25 and thumbnail files."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from imgsearch import Library
from imgsearch.errors import StoreError
from imgsearch.indexer.lock import index_lock
from imgsearch.paths import thumbs_dir
from imgsearch.serve import thumbs
from libtools import check_consistent, make_set, photos, rows, tiny_captioner
from photos import IS_ROOT, make_photo

KW = dict(batch_size=4, workers=0, progress=False)


@pytest.fixture(scope="module")
def cap():
    return tiny_captioner(0)


def faiss_ids(lib: Library, kind: str = "caption") -> set[int]:
    return set(int(i) for i in lib.caches.vector_index(kind).ids())


def fts_ids(db) -> set[int]:
    return {r for (r,) in rows(db, "SELECT rowid FROM photo_fts")}


def make_thumbs(lib: Library) -> dict[int, str]:
    """Thumbnails of every good photo, made the way the web page makes them; {id: thumbnail file}."""
    out = {}
    for (pid,) in rows(lib.path, "SELECT id FROM photos WHERE error IS NULL"):
        pf = thumbs.locate(lib.store, pid)
        thumbs.thumbnail(pf, thumbs_dir(lib.path))
        out[pid] = str(thumbs_dir(lib.path) / f"{pf.content_hash}.jpg")
        assert os.path.exists(out[pid])
    return out


def library(tmp_path, cap):
    base = tmp_path / "pics"
    trip = make_set(base / "trip", ["red_circle", "blue_square"], "t") + \
        make_set(base / "trip" / "day2", ["stripes"], "d")
    home = make_set(base / "home", ["checker", "sky"], "h")
    shutil.copy(home[0], base / "trip" / "same_as_home.jpg")          # one content in two places
    (base / "trip" / "broken.jpg").write_bytes(b"not a photo")       # a failed-file record under trip
    db = tmp_path / "lib" / "library.db"
    lib = Library(db, captioner=cap)
    r = lib.index([base], **KW)
    assert (r.added, r.failed) == (6, 1)
    return lib, db, base, trip, home


def test_forget_a_folder_and_a_file(tmp_path, cap):
    lib, db, base, trip, home = library(tmp_path, cap)
    with lib:
        thumb = make_thumbs(lib)
        before = photos(db)
        rev = lib.store.revision()
        trip_ids = {v[0] for p, v in before.items() if p.startswith(str(base / "trip") + os.sep)}
        assert len(trip_ids) == 5                                    # 4 photos + the failed record

        dry = lib.forget([base / "trip"], dry_run=True)
        assert dry.dry_run and (dry.photos, dry.failed) == (4, 1)
        assert dry.folders == [(str(base / "trip"), 4), (str(base / "trip" / "day2"), 1)]
        assert dry.paths == sorted(p for p in before if p.startswith(str(base / "trip") + os.sep))
        assert photos(db) == before and lib.store.revision() == rev  # nothing changed
        assert all(os.path.exists(t) for t in thumb.values())

        rep = lib.forget([base / "trip"])
        assert (rep.photos, rep.failed, rep.unmatched, rep.dry_run) == (4, 1, [], False)
        left = photos(db)
        assert set(left) == {str(p) for p in home}
        assert lib.store.revision() > rev
        for table in ("captions", "tags", "photo_cells"):             # nothing of theirs is left
            assert rows(db, f"SELECT count(*) FROM {table} WHERE photo_id NOT IN (SELECT id FROM photos)") == [(0,)]
        assert rows(db, "SELECT count(*) FROM photo_cells") != [(0,)]  # (the others' cells are there)
        want = {v[0] for v in left.values()}
        assert faiss_ids(lib) == faiss_ids(lib, "labels") == want and fts_ids(db) == want
        assert all(p.exists() for p in trip)                           # files stay on disk
        # thumbnails of forgotten photos go, except the one a remaining photo (same content) still uses
        assert rep.thumbnails == 3
        for pid in trip_ids & set(thumb):
            assert os.path.exists(thumb[pid]) == (thumb[pid] == thumb[before[str(home[0])][0]])
        # search no longer finds them
        for mode in ("bm25", "dense", "labels"):
            assert {h.path for h in lib.query("a photo", k=50, mode=mode, min_score=0)} <= {str(p) for p in home}
        check_consistent(db)

        # a single photo; a path the library does not know
        rep = lib.forget([home[1], tmp_path / "nowhere"])
        assert (rep.photos, rep.unmatched) == (1, [str(tmp_path / "nowhere")])
        assert set(photos(db)) == {str(home[0])} and faiss_ids(lib) == {before[str(home[0])][0]}

    # a fresh process: the FAISS file was patched to the final revision
    with Library(db, create=False) as again:
        assert faiss_ids(again) == {before[str(home[0])][0]}


def test_forget_a_folder_that_is_gone(tmp_path, cap):
    lib, db, base, trip, home = library(tmp_path, cap)
    with lib:
        shutil.rmtree(base / "trip")
        rep = lib.forget(str(base / "trip") + os.sep)                # trailing slash, folder gone
        assert (rep.photos, rep.failed) == (4, 1)
        assert set(photos(db)) == {str(p) for p in home}


def test_forget_under_a_symlinked_root(tmp_path, cap):
    real = tmp_path / "real"
    make_set(real / "a", ["red_circle", "sky"], "a")
    link = tmp_path / "link"
    link.symlink_to(real)
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([link], **KW)                                       # stored under the resolved root
        assert all(p.startswith(str(real)) for p in photos(db))
        assert lib.forget([link / "a"]).photos == 2 and photos(db) == {}


def test_forget_waits_for_no_index_run(tmp_path, cap):
    lib, db, base, trip, home = library(tmp_path, cap)
    with lib:
        before = photos(db)
        with index_lock(db):
            with pytest.raises(StoreError, match="running"):
                lib.forget([base / "trip"])
            with pytest.raises(StoreError, match="running"):
                lib.prune()
            assert lib.forget([base / "trip"], dry_run=True).photos == 4  # a dry run only reads
        assert photos(db) == before


def test_prune_a_folder_that_is_gone_and_everything(tmp_path, cap):
    lib, db, base, trip, home = library(tmp_path, cap)
    with lib:
        make_thumbs(lib)
        before = photos(db)
        shutil.rmtree(base / "trip" / "day2")
        trip[0].unlink()
        (base / "trip" / "broken.jpg").unlink()
        # today's way cannot reach a folder that is gone
        from imgsearch.errors import UserError
        with pytest.raises(UserError, match="no such folder"):
            lib.index([base / "trip" / "day2"], prune_empty=True, **KW)

        rep = lib.prune(base / "trip" / "day2", dry_run=True)
        assert rep.dry_run and rep.paths == [str(trip[2])] and photos(db) == before
        rep = lib.prune(base / "trip" / "day2")
        assert (rep.photos, rep.failed, rep.paths) == (1, 0, [str(trip[2])])
        assert set(photos(db)) == set(before) - {str(trip[2])}

        rep = lib.prune()                                             # everywhere: the deleted file, the failed one
        assert (rep.photos, rep.failed) == (1, 1)
        assert sorted(rep.paths) == sorted([str(trip[0]), str(base / "trip" / "broken.jpg")])
        left = photos(db)
        assert set(left) == {str(trip[1]), str(base / "trip" / "same_as_home.jpg"), *map(str, home)}
        assert faiss_ids(lib) == {v[0] for v in left.values()} == fts_ids(db)
        assert lib.prune().removed == 0                               # nothing more to do
        rep = lib.prune(tmp_path / "never-indexed")
        assert rep.removed == 0 and rep.unmatched == [str(tmp_path / "never-indexed")]
        check_consistent(db)


def test_prune_drops_what_an_index_run_kept(tmp_path, cap):
    parent = tmp_path / "parent"
    make_set(parent / "live", ["red_circle"], "l")
    make_set(parent / "mnt", ["stripes", "checker"], "m")
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([parent], **KW)
        for f in (parent / "mnt").iterdir():
            f.unlink()
        r = lib.index([parent], **KW)
        assert r.kept == [(str(parent / "mnt"), 2)]
        assert lib.prune(parent / "mnt").photos == 2
        assert lib.index([parent], **KW).kept == []


@pytest.mark.skipif(IS_ROOT, reason="chmod does not stop root")
def test_prune_leaves_files_it_cannot_check(tmp_path, cap):
    base = tmp_path / "pics"
    make_set(base / "locked", ["red_circle"], "x")
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([base], **KW)
        os.chmod(base / "locked", 0)
        try:
            rep = lib.prune()
        finally:
            os.chmod(base / "locked", 0o755)
        assert rep.removed == 0 and len(rep.unreachable) == 1 and len(photos(db)) == 1


def test_cli_forget_and_prune(tmp_path, cap):
    from imgsearch.cli import app

    lib, db, base, trip, home = library(tmp_path, cap)
    lib.close()
    run = CliRunner()
    res = run.invoke(app, ["forget", str(base / "trip"), "--db", str(db), "--dry-run"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "forget: would remove 4 photos and 1 failed-file record in 2 folders" in text
    assert "nothing was changed (--dry-run)" in text
    assert len(photos(db)) == 7
    res = run.invoke(app, ["forget", str(base / "trip" / "day2"), "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["removed"], got["photos"], got["dry_run"], got["paths"]) == (1, 1, False, [str(trip[2])])
    res = run.invoke(app, ["forget", str(tmp_path / "nowhere"), "--db", str(db)])
    assert res.exit_code == 1 and "not in the library" in res.stderr and "Traceback" not in res.output

    home[1].unlink()
    res = run.invoke(app, ["prune", "--db", str(db), "--json", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["paths"] == [str(home[1])] and len(photos(db)) == 6
    res = run.invoke(app, ["prune", "--db", str(db)])
    assert res.exit_code == 0 and "prune: removed 1 photo in 1 folder" in " ".join(res.stdout.split())
    assert str(home[1]) not in photos(db)


def test_index_verify_redescribes_a_replaced_photo(tmp_path, cap):
    pics = tmp_path / "pics"
    a = make_photo(pics / "a.bmp", kind="red_circle", size=(64, 48))       # BMP: the size depends on the
    b = make_photo(pics / "b.bmp", kind="stripes", size=(64, 48))          # dimensions only
    keep = make_photo(pics / "keep.bmp", kind="sky", size=(64, 48))
    db = tmp_path / "library.db"
    with Library(db, captioner=cap) as lib:
        lib.index([pics], **KW)
        before = {p: r for p, *r in rows(db, "SELECT path, id, content_hash, labels, indexed_at FROM photos")}
        st = os.stat(a)
        other = tmp_path / "other.bmp"
        make_photo(other, kind="checker", size=(64, 48))
        assert other.stat().st_size == st.st_size
        shutil.copyfile(other, a)                                     # another photo, same size ...
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))              # ... and same mtime
        r = lib.index([pics], **KW)
        assert (r.updated, r.skipped_unchanged) == (0, 3)             # by design: not looked at
        r = lib.index([pics], verify=True, **KW)
        assert (r.added, r.updated, r.removed, r.skipped_unchanged) == (0, 1, 0, 2), r
        after = {p: r for p, *r in rows(db, "SELECT path, id, content_hash, labels, indexed_at FROM photos")}
        assert after[str(a)][0] == before[str(a)][0]                  # the same row, described again
        assert after[str(a)][1] != before[str(a)][1] and after[str(a)][2] != before[str(a)][2]
        for p in (b, keep):
            assert after[str(p)] == before[str(p)]
        assert lib.index([pics], verify=True, **KW).updated == 0
        check_consistent(db)
