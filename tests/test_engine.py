"""Queries (search/engine.py, through Library.query): modes, --in filter, deleted files, FAISS caches deleted
or stale, no torch on the query path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from imgsearch import Hit, Library
from imgsearch.library import LibraryError
from imgsearch.paths import captions_faiss_path, images_faiss_path
from libtools import make_set, rows, tiny_captioner

KW = dict(batch_size=8, workers=0, progress=False)
KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker"]


def captions(db) -> dict[str, str]:
    return {p: c for p, c in rows(db, "SELECT path, caption FROM photos WHERE error IS NULL")}


def test_hits_in_every_mode(indexed_library):
    base, db = indexed_library
    from imgsearch.text.normalize import search_terms

    caps = captions(db)
    # the tiny model's captions are random words: query with the most wordy one
    target, text = max(caps.items(), key=lambda kv: (len(search_terms(kv[1])), kv[0]))
    assert search_terms(text), caps
    with Library(db) as lib:
        for mode in ("hybrid", "bm25", "dense"):
            hits = lib.query(text, k=5, mode=mode)
            assert 1 <= len(hits) <= 5
            assert all(isinstance(h, Hit) for h in hits)
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:])), mode
            assert len({h.id for h in hits}) == len(hits)
            for h in hits:
                assert os.path.isabs(h.path) and h.path in caps and h.caption == caps[h.path]
                assert isinstance(h.keywords, list) and isinstance(h.tags, list)
        # dense: exact cosine between the query and each photo's stored caption vector, best first
        q = lib.embedder().embed([text])[0]
        exact = {i: float(np.frombuffer(v, dtype="<f4") @ q)
                 for i, v in rows(db, "SELECT id, caption_embedding FROM photos WHERE error IS NULL")}
        dense = lib.query(text, k=len(caps), mode="dense")
        # byte-identical copies (A/ and A2/ share drawn photos) are one hit listing the others (Hit.copies)
        assert sorted([h.path for h in dense] + [c for h in dense for c in h.copies]) == sorted(caps)
        assert [round(h.score, 5) for h in dense] == sorted((round(exact[h.id], 5) for h in dense), reverse=True)
        assert all(h.score == pytest.approx(exact[h.id], abs=1e-5) for h in dense)
        assert any(target in [h.path, *h.copies] for h in lib.query(text, k=len(caps), mode="bm25"))
        assert len(lib.query("anything at all", k=100, mode="dense")) == len(dense)
        with pytest.raises(LibraryError):
            lib.query("   ")
        with pytest.raises(LibraryError):
            lib.query("x", mode="fuzzy")


def test_in_folder(indexed_library):
    base, db = indexed_library
    with Library(db) as lib:
        # "A" must not match the sibling folder "A2"
        for folder, n in ((base / "A" / "sub", 3), (base / "A2", 3), (base / "A", 8)):
            for mode in ("hybrid", "dense"):
                hits = lib.query("a red circle on the grass", k=20, mode=mode, in_folder=folder)
                assert len(hits) == n, (folder, mode)
                assert all(h.path.startswith(str(folder) + os.sep) for h in hits)
        with pytest.raises(LibraryError, match="no such folder"):
            lib.query("x", in_folder=base / "missing")


def test_deleted_file_not_returned(tmp_path):
    folder = tmp_path / "pics"
    make_set(folder, KINDS[:6], "p")
    db = tmp_path / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([folder], **KW)
        first = lib.query("a dog on the beach", k=3, mode="dense")
        Path(first[0].path).unlink()
        hits = lib.query("a dog on the beach", k=3, mode="dense")
        assert len(hits) == 3 and first[0].path not in {h.path for h in hits}
        assert [h.path for h in hits][:2] == [h.path for h in first[1:]]
        assert len(lib.query("a dog", k=10)) == 5


def test_faiss_deleted_or_stale_is_rebuilt(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS[:4], "a")
    make_set(b, KINDS[4:], "b")
    db = tmp_path / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([a], **KW)
        assert captions_faiss_path(db).is_file()
        old = tmp_path / "old.faiss"
        shutil.copy(captions_faiss_path(db), old)
        lib.index([b], **KW)
        want = [(h.path, round(h.score, 5)) for h in lib.query("a red circle", k=8, mode="dense")]
        assert len(want) == 8

    shutil.copy(old, captions_faiss_path(db))  # stale: written at an older revision
    with Library(db) as lib:
        assert [(h.path, round(h.score, 5)) for h in lib.query("a red circle", k=8, mode="dense")] == want
    for p in (captions_faiss_path(db), images_faiss_path(db)):
        p.unlink(missing_ok=True)
    with Library(db) as lib:
        assert [(h.path, round(h.score, 5)) for h in lib.query("a red circle", k=8, mode="dense")] == want
    assert captions_faiss_path(db).is_file()  # rebuilt and saved
    captions_faiss_path(db).write_bytes(b"garbage")  # corrupt
    with Library(db) as lib:
        assert [(h.path, round(h.score, 5)) for h in lib.query("a red circle", k=8, mode="dense")] == want


def test_empty_library(tmp_path):
    with Library(tmp_path / "library.db") as lib:
        assert lib.query("a dog") == []
        st = lib.status()
        assert st["photos"] == 0 and st["last_index"] is None


def test_query_never_imports_torch(indexed_library):
    base, db = indexed_library
    code = textwrap.dedent(f"""
        import sys
        import imgsearch
        assert "torch" not in sys.modules
        with imgsearch.Library({str(db)!r}) as lib:
            assert lib.query("a red circle", k=3, mode="hybrid")
            assert lib.query("a red circle", k=3, mode="dense")
            lib.query("a red circle", k=3, mode="bm25")
            lib.status()
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "sentence_transformers"))
        assert not bad, bad
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
