"""imgsearch/models.py: the models a library uses, loaded on first use; a Library can be handed its own."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from imgsearch import Library
from imgsearch.errors import UserError
from imgsearch.models import Models
from libtools import make_set, tiny_captioner


def test_a_library_uses_the_models_it_is_given(tmp_path):
    cap = tiny_captioner(0)
    models = Models(captioner=cap)
    make_set(tmp_path / "pics", ["red_circle", "sky"], "p")
    with Library(tmp_path / "library.db", models=models) as lib:
        assert lib.models is models and lib.captioner() is cap
        assert lib.index([tmp_path / "pics"], workers=0, progress=None).added == 2
        assert lib.status()["model_versions"] == {cap.version: 2}
        assert lib.embedder() is models.embedder()                 # loaded once, then shared


def test_version_of_a_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        Models(tmp_path / "nope.pt").version()
    assert Models(captioner=tiny_captioner(0)).version() == tiny_captioner(0).version


def test_the_shipped_version_is_read_without_torch():
    code = textwrap.dedent("""
        import sys
        from imgsearch.models import Models
        v = Models().version()
        assert v and "torch" not in sys.modules, (v, "torch" in sys.modules)
        print(v)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("captioner-")


def test_progress_callback_gets_done_and_total(tmp_path):
    make_set(tmp_path / "pics", ["red_circle", "sky", "checker"], "p")
    calls = []
    with Library(tmp_path / "library.db", models=Models(captioner=tiny_captioner(0))) as lib:
        lib.index([tmp_path / "pics"], workers=0, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (3, 3) and all(t == 3 for _, t in calls)
