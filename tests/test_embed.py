"""imgsearch.text.embed: torch-free MiniLM, checked against sentence-transformers when available."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgsearch.text import embed as E
from imgsearch.text import minilm, minilm_onnx

SENTENCES = [
    "",
    "a dog",
    "A black dog runs across the grass .",
    "Two children play in the sand at the beach while their parents watch from the shore.",
    "a man riding a red bicycle down a mountain trail",
    "Ünïcödé café naïve résumé — “quotes” and ‘apostrophes’",
    "犬が公園で走っている",
    "🐶🏖️🚲 emoji only",
    "AND OR NOT \"*\" NEAR(",
    "\n\t  ",
    "e = mc^2, 3.14159, 1,000,000 people",
    "word " * 400,  # > 256 tokens: truncated
    "The quick brown fox jumps over the lazy dog. " * 40,
    "a group of people standing in front of a building",
    "SHOUTING IN ALL CAPS",
    "don't won't can't isn't",
    "snowboarder in mid-air",
    "a woman in a pink dress",
    "x",
    "über straße",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embcache")


@pytest.fixture(scope="module")
def numpy_emb():
    return E.TextEmbedder.load(backend="numpy")


@pytest.fixture(scope="module")
def ort_emb(cache_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    return E.TextEmbedder.load(backend="onnxruntime", cache_dir=cache_dir)


def test_erf_numpy_accuracy():
    xs = np.linspace(-7, 7, 20001)
    ref = np.array([math.erf(v) for v in xs])
    assert np.abs(minilm.erf_numpy(xs) - ref).max() < 1e-7


def test_shape_norm_and_api(numpy_emb):
    e = numpy_emb
    assert e.dim == 384 and e.version.startswith("all-MiniLM-L6-v2@53aa51172d14")
    v = e.embed(SENTENCES[:5])
    assert v.shape == (5, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert e.embed([]).shape == (0, 384)
    assert e.embed("a dog").shape == (1, 384)
    assert e.embed_one("a dog").shape == (384,)
    assert E.TextEmbedder.load(backend="numpy").model is e.model  # loaded once per process


def test_batching_does_not_change_vectors(numpy_emb):
    texts = SENTENCES[:8]
    together = numpy_emb.embed(texts, batch_size=3)
    alone = np.stack([numpy_emb.embed_one(t) for t in texts])
    assert np.allclose(together, alone, atol=2e-5)


def test_backends_agree(numpy_emb, ort_emb):
    assert ort_emb.backend == "onnxruntime" and numpy_emb.backend == "numpy"
    assert ort_emb.version == numpy_emb.version
    a = numpy_emb.embed(SENTENCES)
    b = ort_emb.embed(SENTENCES)
    assert (a * b).sum(1).min() > 0.99999


def test_matches_sentence_transformers(numpy_emb, ort_emb):
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except Exception:
        pytest.skip("sentence_transformers not importable")
    torch.set_num_threads(1)
    st = SentenceTransformer(str(E.default_model_path()), device="cpu")
    ref = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True, batch_size=32)
    for emb in (numpy_emb, ort_emb):
        got = emb.embed(SENTENCES)
        cos = (got * ref).sum(1)
        assert cos.min() >= 0.9999, (emb.backend, cos.min(), SENTENCES[int(cos.argmin())])


def test_sha_mismatch_names_file(tmp_path):
    src = E.default_model_path()
    for p in src.iterdir():
        if p.name != "model.safetensors":
            (tmp_path / p.name).symlink_to(p)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not the model")
    with pytest.raises(E.ModelIntegrityError) as ei:
        E.TextEmbedder.load(tmp_path, backend="numpy")
    assert str(bad) in str(ei.value)


def test_corrupt_onnx_cache_is_rebuilt(ort_emb, cache_dir):
    files = list((Path(cache_dir) / "models").glob("*.onnx"))
    assert len(files) == 1
    data = files[0].read_bytes()
    files[0].write_bytes(data[:1000])  # truncated -> sha mismatch -> rebuilt, not loaded
    model = minilm_onnx.onnx_model(E.default_model_path(), minilm.read_config(E.default_model_path()), Path(cache_dir))
    assert isinstance(model, bytes) and files[0].read_bytes() == model
    assert minilm_onnx.onnx_model(E.default_model_path(), minilm.read_config(E.default_model_path()),
                                 Path(cache_dir)) == files[0]


def test_no_torch_import(cache_dir):
    code = (
        "import sys; from imgsearch.text.embed import TextEmbedder; "
        f"e = TextEmbedder.load(cache_dir={str(cache_dir)!r}); v = e.embed(['a dog on a beach']); "
        "n = TextEmbedder.load(backend='numpy').embed(['a dog']); "
        "bad = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]; "
        "print(e.backend, v.shape, bad)"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("(1, 384) []"), out.stdout
