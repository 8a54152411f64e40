"""The frozen image encoder on ONNX Runtime, for CPU inference.

PyTorch's eager CPU kernels for EfficientNet-Lite's depthwise convolutions are slow, and they
degrade badly when the two cores are shared (DataLoader decode workers, MiniLM): measured at batch
32 on this 2-core machine while other jobs ran, PyTorch 100-270 ms per photo vs ONNX Runtime
18-22 ms, with the same outputs to ~2e-5 (bench/index_throughput.py has the idle-machine figures).

The ONNX graph is exported once from the verified PyTorch encoder (so the weights are the SHA-256
checked ones) with torch.onnx's TorchScript exporter, checked against PyTorch on a fixed batch,
and cached as

    <cache>/models/<encoder>-<weights sha256[:16]>-g<GRAPH_VERSION>.onnx  (+ .sha256, checked on load)

<cache> is $IMGSEARCH_CACHE, $XDG_CACHE_HOME/imgsearch or ~/.cache/imgsearch (as for MiniLM).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

GRAPH_VERSION = 2          # 2: the grid carries the mid-level block outputs too
TOLERANCE = 1e-3          # max |ONNX − PyTorch| on the check batch, grid and logits
log = logging.getLogger(__name__)


class OnnxEncoderError(RuntimeError):
    """The ONNX encoder could not be built or does not match PyTorch."""


def onnx_path(encoder, cache_dir: str | Path) -> Path:
    spec = encoder.spec
    return Path(cache_dir) / "models" / f"{spec.name}-{spec.sha256[:16]}-g{GRAPH_VERSION}.onnx"


def _check_batch(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2, 3, size, size, generator=g)


def export_onnx(encoder, dest: Path) -> Path:
    """Export ``encoder`` (grid, logits) with a dynamic batch axis, verify it against PyTorch and
    write it atomically with its SHA-256 beside it."""
    import onnxruntime as ort

    size = encoder.spec.image_size
    x = _check_batch(size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder.cpu().eval(), (x,), buf, input_names=["images"], output_names=["grid", "logits"],
                          dynamic_axes={"images": {0: "batch"}, "grid": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    data = buf.getvalue()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    og, ol = sess.run(None, {"images": x.numpy()})
    with torch.inference_mode():
        tg, tl = encoder(x)
    err = max(float(np.abs(og - tg.numpy()).max()), float(np.abs(ol - tl.numpy()).max()))
    if not err <= TOLERANCE:
        raise OnnxEncoderError(f"exported encoder differs from PyTorch by {err:.2e} (> {TOLERANCE})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    Path(f"{dest}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    return dest


class OnnxImageEncoder:
    """Callable like ImageEncoder: (B, 3, S, S) float tensor → (grid (B, 49, C), logits (B, 1000))."""

    def __init__(self, session, spec):
        self.session, self.spec = session, spec

    @classmethod
    def for_encoder(cls, encoder, cache_dir: str | Path | None = None, threads: int | None = None
                    ) -> "OnnxImageEncoder":
        import onnxruntime as ort

        from imgsearch.text.embed import default_cache_dir

        path = onnx_path(encoder, cache_dir if cache_dir is not None else default_cache_dir())
        data = None
        if path.is_file():
            data = path.read_bytes()
            want = Path(f"{path}.sha256").read_text().strip() if Path(f"{path}.sha256").is_file() else ""
            if hashlib.sha256(data).hexdigest() != want:
                log.warning("cached ONNX encoder %s is damaged: exporting it again", path)
                data = None
        if data is None:
            try:
                export_onnx(encoder, path)
                data = path.read_bytes()
            except OSError:                      # read-only cache folder: export into a temporary one
                import tempfile

                with tempfile.TemporaryDirectory() as d:
                    data = export_onnx(encoder, Path(d) / path.name).read_bytes()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        return cls(sess, encoder.spec)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())   # NCHW
        grid, logits = self.session.run(None, {"images": x})
        return torch.from_numpy(grid), torch.from_numpy(logits)
