"""From a decoded PIL image to the encoder's input tensor."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .encoder import IMAGE_MEAN, IMAGE_STD

# "squash" resizes the whole photo to a square (as Flickr8k's training images were made);
# "crop" resizes the short side and takes the centre square.
RESIZE_MODES = ("squash", "crop")


def fit_square(img: Image.Image, size: int, mode: str = "squash") -> Image.Image:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, not {mode!r}")
    if mode == "crop":
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image (size×size) → (3, size, size) float tensor normalised to [-1, 1]."""
    arr = np.array(img.convert("RGB"), dtype=np.uint8)
    t = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (t - mean) / std
