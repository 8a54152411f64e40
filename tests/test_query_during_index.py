"""A query never waits for an index run in another process: while the run commits batches (each a new store
revision), queries answer from the FAISS index they hold, or the library's file, instead of rebuilding it
from SQLite on every revision; when the run ends its file is current and is loaded as it is."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from imgsearch import Library
from imgsearch.search import dense
from libtools import make_set, rows, tiny_captioner

KINDS = ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "gradient", "sky", "marker"]

SCRIPT = textwrap.dedent("""
    import time
    import torch
    torch.set_num_threads(1)
    from imgsearch import Library
    from imgsearch.model.captioner import Captioner

    cap = Captioner.tiny(seed=0)
    real = cap.describe
    def slow(*a, **kw):          # batches a second apart: the test queries between them
        out = real(*a, **kw)
        time.sleep(0.8)
        return out
    cap.describe = slow
    with Library({db!r}, captioner=cap) as lib:
        lib.index([{a!r}, {b!r}], batch_size=2, workers=0, progress=False)
    print("FINISHED", flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_queries_do_not_rebuild_faiss_while_another_process_indexes(tmp_path, monkeypatch):
    a, b = tmp_path / "A", tmp_path / "B"
    make_set(a, KINDS[:4], "a")
    make_set(b, KINDS[4:], "b")
    db = tmp_path / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([a], batch_size=4, workers=0, progress=False)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(db=str(db), a=str(a), b=str(b)))

    builds: list[int] = []
    real_build = dense.VectorIndex.build.__func__

    def counting_build(cls, *args, **kw):
        builds.append(1)
        return real_build(cls, *args, **kw)

    with Library(db) as lib:
        before = {h.id for h in lib.query("a red circle", k=100, mode="dense", min_score=0)}
        assert len(before) == 4
        monkeypatch.setattr(dense.VectorIndex, "build", classmethod(counting_build))
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            rev0 = lib.store.revision()
            deadline = time.monotonic() + 120
            seen = set()
            while proc.poll() is None and time.monotonic() < deadline:
                if lib.store.revision() != rev0:         # a batch of the run has been committed
                    got = {h.id for h in lib.query("a red circle", k=100, mode="dense", min_score=0)}
                    assert got <= before | set(i for (i,) in rows(db, "SELECT id FROM photos"))
                    seen.add(lib.store.revision())
                time.sleep(0.1)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert b"FINISHED" in out, err.decode()[-2000:]
        assert len(seen) >= 2, "the test never queried between two batches"
        assert builds == [], "a query rebuilt the FAISS index while the run was writing"
        # the run has ended: its file is current and is loaded as it is (still no build)
        after = {h.id for h in lib.query("a red circle", k=100, mode="dense", min_score=0)}
        assert len(after) == len(KINDS) and before < after
        assert builds == []
