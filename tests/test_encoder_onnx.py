"""The CPU encoder on ONNX Runtime: same outputs as PyTorch, cached, re-exported when damaged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imgsearch.model.encoder import load_encoder
from imgsearch.model.encoder_onnx import OnnxImageEncoder, onnx_path
from imgsearch.model.encoder import IMAGE_MEAN, IMAGE_STD
from photos import make_photo


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("lite0", "cpu")


def batch(tmp_path) -> torch.Tensor:
    from PIL import Image

    ims = []
    for i, kind in enumerate(["red_circle", "stripes", "sky", "checker"]):
        p = make_photo(tmp_path / f"{i}.jpg", kind=kind, size=(224, 224))
        a = np.asarray(Image.open(p).convert("RGB").resize((224, 224)), dtype=np.float32) / 255.0
        ims.append(torch.from_numpy((a - np.float32(IMAGE_MEAN)) / np.float32(IMAGE_STD)).permute(2, 0, 1))
    return torch.stack(ims).float()


def test_onnx_matches_torch_and_is_cached(encoder, tmp_path):
    x = batch(tmp_path)
    onnx = OnnxImageEncoder.for_encoder(encoder, cache_dir=tmp_path / "cache", threads=1)
    path = onnx_path(encoder, tmp_path / "cache")
    assert path.is_file() and path.with_name(path.name + ".sha256").is_file()
    g, l = onnx(x)
    with torch.inference_mode():
        tg, tl = encoder(x)
    assert g.shape == (4, 49, 1712) and l.shape == (4, 1000)
    assert (g - tg).abs().max() < 1e-3 and (l - tl).abs().max() < 1e-3
    assert (l.argmax(1) == tl.argmax(1)).all()
    mtime = path.stat().st_mtime_ns
    OnnxImageEncoder.for_encoder(encoder, cache_dir=tmp_path / "cache", threads=1)
    assert path.stat().st_mtime_ns == mtime                      # reused, not exported again


def test_damaged_cache_is_exported_again(encoder, tmp_path):
    cache = tmp_path / "cache"
    OnnxImageEncoder.for_encoder(encoder, cache_dir=cache, threads=1)
    path = onnx_path(encoder, cache)
    path.write_bytes(path.read_bytes()[:1000])                   # truncated
    x = batch(tmp_path)
    g, _ = OnnxImageEncoder.for_encoder(encoder, cache_dir=cache, threads=1)(x)
    with torch.inference_mode():
        assert (g - encoder(x)[0]).abs().max() < 1e-3


def test_captioner_backends_agree_and_torch_can_be_forced(tmp_path, monkeypatch):
    from imgsearch.model.captioner import Captioner

    monkeypatch.setenv("IMGSEARCH_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("IMGSEARCH_ENCODER", "torch")
    cap = Captioner.tiny()
    x = batch(tmp_path)
    g_torch, l_torch = cap.encode(x)
    assert not (tmp_path / "c").exists()                         # forced PyTorch: nothing exported
    monkeypatch.delenv("IMGSEARCH_ENCODER")
    g, l = cap.encode(x)
    assert (tmp_path / "c" / "models").is_dir()
    assert (g - g_torch).abs().max() < 1e-3 and (l - l_torch).abs().max() < 1e-3
