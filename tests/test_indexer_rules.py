"""The per-batch decision rules of an index run (imgsearch/indexer/rules.py): moved, touch, copy, describe."""
from __future__ import annotations

from imgsearch.indexer.rules import Copy, Decoded, Move, StoredPhoto, decide, is_described, needs_redescribing

V = "model-v2"


def stored(pid, path, version=V, error=None, caption="a dog"):
    return StoredPhoto(pid, path, version, error, caption)


def new(path, h):
    return Decoded(path, "new", None, h)


def changed(path, pid, h):
    return Decoded(path, "changed", pid, h)


def run(files, rows, gone=(), claimed=()):
    by_hash: dict[str, list] = {}
    for h, r in rows:
        by_hash.setdefault(h, []).append(r)
    return decide(files, by_hash, V, set(claimed), lambda p: p in gone)


def test_unknown_content_is_described():
    d = run([new("/a/x.jpg", "h1"), changed("/a/y.jpg", 7, "h2")], [])
    assert d.describe == [0, 1] and not d.moves and not d.copies and not d.touches


def test_new_path_with_content_of_a_gone_photo_is_a_move():
    d = run([new("/a/new.jpg", "h1")], [("h1", stored(3, "/a/old.jpg"))], gone={"/a/old.jpg"})
    assert d.moves == [Move(0, 3, "/a/old.jpg")]
    assert d.describe == [] and d.copies == [] and d.claimed == {3}


def test_moved_photo_is_redescribed_only_when_not_described_by_this_version():
    for row, again in [(stored(3, "/o.jpg", version="model-v1"), True),
                       (stored(3, "/o.jpg", error="not an image", caption=None), True),
                       (stored(3, "/o.jpg", caption=None), True),
                       (stored(3, "/o.jpg", caption=""), False),  # an empty caption counts for moves
                       (stored(3, "/o.jpg"), False)]:
        d = run([new("/n.jpg", "h")], [("h", row)], gone={"/o.jpg"})
        assert d.moves == [Move(0, 3, "/o.jpg")], row
        assert d.describe == ([0] if again else []), row


def test_a_photo_whose_file_is_still_there_is_copied_not_moved():
    d = run([new("/a/copy.jpg", "h1")], [("h1", stored(3, "/a/orig.jpg"))])
    assert d.moves == [] and d.copies == [Copy(0, 3)] and d.describe == []


def test_move_wins_over_copy():
    rows = [("h", stored(1, "/a/here.jpg")), ("h", stored(2, "/a/gone.jpg"))]
    d = run([new("/a/new.jpg", "h")], rows, gone={"/a/gone.jpg"})
    assert d.moves == [Move(0, 2, "/a/gone.jpg")] and d.copies == []


def test_only_new_paths_move():
    rows = [("h", stored(2, "/a/gone.jpg", version="model-v1"))]
    d = run([changed("/a/x.jpg", 5, "h")], rows, gone={"/a/gone.jpg"})
    assert d.moves == [] and d.describe == [0]


def test_claimed_photos_are_neither_moved_again_nor_copied():
    rows = [("h", stored(2, "/a/gone.jpg"))]
    d = run([new("/a/n1.jpg", "h")], rows, gone={"/a/gone.jpg"}, claimed={2})
    assert d.moves == [] and d.copies == [] and d.describe == [0]


def test_within_a_batch_a_photo_is_claimed_once():
    rows = [("h", stored(2, "/a/gone.jpg"))]
    d = run([new("/a/n1.jpg", "h"), new("/a/n2.jpg", "h")], rows, gone={"/a/gone.jpg"})
    assert d.moves == [Move(0, 2, "/a/gone.jpg")]
    assert d.copies == [] and d.describe == [1]  # the claimed row is no copy source either
    assert d.claimed == {2}


def test_decide_leaves_the_callers_claimed_set_alone():
    claimed = {99}
    decide([new("/n.jpg", "h")], {"h": [stored(2, "/g.jpg")]}, V, claimed, lambda p: True)
    assert claimed == {99}


def test_changed_file_with_the_same_hash_is_a_touch():
    d = run([changed("/a/x.jpg", 5, "h")], [("h", stored(5, "/a/x.jpg"))])
    assert d.touches == [0] and d.describe == [] and d.copies == []


def test_touch_wins_over_copy():
    rows = [("h", stored(4, "/a/other.jpg")), ("h", stored(5, "/a/x.jpg"))]
    d = run([changed("/a/x.jpg", 5, "h")], rows)
    assert d.touches == [0] and d.copies == []


def test_no_touch_when_the_own_row_is_not_described_by_this_version():
    own = stored(5, "/a/x.jpg", version="model-v1")
    assert run([changed("/a/x.jpg", 5, "h")], [("h", own)]).describe == [0]
    d = run([changed("/a/x.jpg", 5, "h")], [("h", own), ("h", stored(4, "/a/other.jpg"))])
    assert d.touches == [] and d.copies == [Copy(0, 4)]


def test_no_touch_when_the_content_changed():
    d = run([changed("/a/x.jpg", 5, "new-hash")], [("old-hash", stored(5, "/a/x.jpg"))])
    assert d.touches == [] and d.describe == [0]


def test_only_changed_files_are_touched():
    d = run([Decoded("/a/x.jpg", "stale", 5, "h")], [("h", stored(5, "/a/x.jpg", version="model-v1"))])
    assert d.touches == [] and d.describe == [0]
    d = run([Decoded("/a/x.jpg", "retry", 5, "h")], [("h", stored(5, "/a/x.jpg"))])
    assert d.touches == [] and d.describe == [0]  # its own row is no copy source


def test_copy_needs_a_photo_described_by_this_version():
    for row in [stored(4, "/o.jpg", version="model-v1"), stored(4, "/o.jpg", error="bad", caption=None),
                stored(4, "/o.jpg", caption=None), stored(4, "/o.jpg", caption="")]:
        d = run([new("/n.jpg", "h")], [("h", row)])
        assert d.copies == [] and d.describe == [0], row
    rows = [("h", stored(3, "/old.jpg", version="model-v1")), ("h", stored(4, "/o1.jpg")), ("h", stored(6, "/o2.jpg"))]
    assert run([new("/n.jpg", "h")], rows).copies == [Copy(0, 4)]  # the first described one


def test_describe_lists_positions_in_order_moves_included():
    rows = [("h1", stored(2, "/g.jpg", version="model-v1")), ("h3", stored(8, "/c.jpg"))]
    files = [new("/a.jpg", "h0"), new("/b.jpg", "h1"), new("/d.jpg", "h3"), changed("/e.jpg", 9, "h4")]
    d = run(files, rows, gone={"/g.jpg"})
    assert d.describe == [0, 1, 3] and d.moves == [Move(1, 2, "/g.jpg")] and d.copies == [Copy(2, 8)]


def test_predicates():
    assert is_described(stored(1, "/x"), V) and not is_described(stored(1, "/x", caption=""), V)
    assert not needs_redescribing(stored(1, "/x", caption=""), V)
    assert needs_redescribing(stored(1, "/x", version=None), V)
