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

import logging
from pathlib import Path

import numpy as np
import torch

from imgsearch.errors import ModelError

GRAPH_VERSION = 2          # 2: the grid carries the mid-level block outputs too
TOLERANCE = 1e-3          # max |ONNX − PyTorch| on the check batch, grid and logits
log = logging.getLogger(__name__)


class OnnxEncoderError(ModelError, RuntimeError):
    """The ONNX encoder could not be built or does not match PyTorch."""


def onnx_path(encoder, cache_dir: str | Path) -> Path:
    spec = encoder.spec
    return Path(cache_dir) / "models" / f"{spec.name}-{spec.sha256[:16]}-g{GRAPH_VERSION}.onnx"


def _check_batch(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2, 3, size, size, generator=g)


def export_onnx(encoder) -> bytes:
    """``encoder`` (grid, logits) as a serialised ONNX graph with a dynamic batch axis, verified against
    PyTorch on a fixed batch (OnnxEncoderError when it strays)."""
    import onnxruntime as ort

    from imgsearch.artifacts import export_torch

    x = _check_batch(encoder.spec.image_size)
    data = export_torch(encoder.cpu().eval(), (x,), input_names=["images"], output_names=["grid", "logits"],
                        dynamic_axes={"images": {0: "batch"}, "grid": {0: "batch"}, "logits": {0: "batch"}})
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    og, ol = sess.run(None, {"images": x.numpy()})
    with torch.inference_mode():
        tg, tl = encoder(x)
    err = max(float(np.abs(og - tg.numpy()).max()), float(np.abs(ol - tl.numpy()).max()))
    if not err <= TOLERANCE:
        raise OnnxEncoderError(f"exported encoder differs from PyTorch by {err:.2e} (> {TOLERANCE})")
    return data


class OnnxImageEncoder:
    """Callable like ImageEncoder: (B, 3, S, S) float tensor → (grid (B, 49, C), logits (B, 1000))."""

    def __init__(self, session, spec):
        self.session, self.spec = session, spec

    @classmethod
    def for_encoder(cls, encoder, cache_dir: str | Path | None = None, threads: int | None = None
                    ) -> "OnnxImageEncoder":
        """The cached graph of ``encoder`` (exported first when missing, damaged or not loadable; kept in
        memory only when the cache cannot be written)."""
        from imgsearch.artifacts import open_cached, ort_session
        from imgsearch.files import cache_dir as default_cache

        path = onnx_path(encoder, cache_dir if cache_dir is not None else default_cache())
        n = int(threads or torch.get_num_threads())
        return open_cached(path, lambda: export_onnx(encoder), lambda m: cls(ort_session(m, n), encoder.spec),
                           "ONNX encoder")

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())   # NCHW
        grid, logits = self.session.run(None, {"images": x})
        return torch.from_numpy(grid), torch.from_numpy(logits)
