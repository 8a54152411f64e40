"""imgsearch.devices: one reading of --device for the CLI, the library and the model; and the error kinds
the model and the web server raise (what status / exit code each one gets)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from imgsearch.devices import device_type, parse_device, resolve_device
from imgsearch.errors import ModelError, NotFoundError, UserError


@pytest.mark.parametrize("text, want", [("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("cuda:0", "cuda:0"),
                                        (" CUDA:12 ", "cuda:12"), ("Cpu", "cpu")])
def test_parse_device_accepts_and_normalises(text, want):
    assert parse_device(text) == want


@pytest.mark.parametrize("text", ["tpu", "", "cuda:", "cuda:-1", "cuda:x", "cuda0", "cpu:0", "mps", "gpu", "auto:1"])
def test_parse_device_refuses_with_one_line(text):
    with pytest.raises(UserError) as e:
        parse_device(text)
    assert "--device must be auto, cpu, cuda or cuda:N" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="^device must"):
        parse_device(text, option="device")


def test_parse_device_does_not_import_torch():
    code = ("import sys; from imgsearch.devices import parse_device, device_type; parse_device('cuda:1'); "
            "assert device_type('cuda:1') == 'cuda' and device_type('cpu') == 'cpu'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_device_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None) == resolve_device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for asked in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ModelError, match="CUDA is not available on this machine"):
            resolve_device(asked)
    with pytest.raises(UserError):
        resolve_device("tpu")
    assert device_type("auto") == "cpu" and device_type(None) == "cpu"


def test_resolve_device_with_one_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ModelError, match="has 1 CUDA GPU"):
        resolve_device("cuda:1")
    assert device_type("auto") == "cuda" and device_type("cuda:0") == "cuda"


def test_captioner_keeps_resolve_device_and_its_errors_are_model_errors():
    from imgsearch.model.captioner import CheckpointError, read_checkpoint
    from imgsearch.model.captioner import resolve_device as from_captioner

    assert from_captioner is resolve_device
    assert issubclass(CheckpointError, ModelError) and issubclass(CheckpointError, RuntimeError)
    with pytest.raises(ModelError) as e:
        read_checkpoint("/nonexistent/model.pt")
    assert e.value.http_status == 503 and e.value.exit_code == 1


def test_serve_errors_keep_their_statuses():
    from imgsearch.serve.app import BadRequest
    from imgsearch.serve.details import PhotoNotFound
    from imgsearch.serve.thumbs import NotServable

    assert issubclass(BadRequest, UserError) and BadRequest("x").http_status == 400
    for kind in (NotServable, PhotoNotFound):
        assert issubclass(kind, NotFoundError) and kind("1").http_status == 404
