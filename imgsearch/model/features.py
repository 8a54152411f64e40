"""Encoder features computed once and cached on disk, so training epochs only run the decoder.

A cache is a folder holding
  grid.npy    (N, 49, C) float16 — the encoder's spatial grid for every image
  logits.npy  (N, 1000) float16 — its ImageNet logits
  meta.json   encoder name, file names (row order), resize mode, image folder
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from imgsearch.files import atomic_write

from .encoder import ImageEncoder
from .preprocess import fit_square, to_tensor


class _ImageFolderList(Dataset):
    def __init__(self, root: Path, names: list[str], size: int, resize: str):
        self.root, self.names, self.size, self.resize = root, names, size, resize

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.root / self.names[i]) as im:
            im.draft("RGB", (self.size, self.size))
            img = fit_square(im.convert("RGB"), self.size, self.resize)
        return to_tensor(img)


def feature_cache(
    encoder: ImageEncoder,
    image_dir: str | Path,
    file_names: list[str],
    cache_dir: str | Path,
    batch_size: int = 64,
    resize: str = "squash",
    workers: int = 1,
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (grid, logits) memory-maps for ``file_names``, computing what the cache lacks."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path = cache_dir / "meta.json"
    meta = {"encoder": encoder.spec.name, "files": list(file_names), "resize": resize,
            "grid_channels": encoder.spec.grid_channels}
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        return (np.load(cache_dir / "grid.npy", mmap_mode="r"), np.load(cache_dir / "logits.npy", mmap_mode="r"))

    n = len(file_names)
    size = encoder.spec.image_size
    grid = np.lib.format.open_memmap(cache_dir / "grid.tmp.npy", "w+", np.float16, (n, (size // 32) ** 2, encoder.spec.grid_channels))
    logits = np.lib.format.open_memmap(cache_dir / "logits.tmp.npy", "w+", np.float16, (n, 1000))
    loader = DataLoader(_ImageFolderList(Path(image_dir), list(file_names), size, resize),
                        batch_size=batch_size, num_workers=workers)
    device = next(encoder.parameters()).device
    done, t0 = 0, time.time()
    for images in loader:
        g, lg = encoder(images.to(device).contiguous(memory_format=torch.channels_last))
        grid[done:done + len(g)] = g.cpu().numpy().astype(np.float16)
        logits[done:done + len(g)] = lg.cpu().numpy().astype(np.float16)
        done += len(g)
        if progress:
            progress(done, n, done / max(time.time() - t0, 1e-9))
    grid.flush(); logits.flush()
    del grid, logits
    (cache_dir / "grid.tmp.npy").replace(cache_dir / "grid.npy")
    (cache_dir / "logits.tmp.npy").replace(cache_dir / "logits.npy")
    atomic_write(meta_path, json.dumps(meta))   # last: the cache counts as complete only once it is there
    return (np.load(cache_dir / "grid.npy", mmap_mode="r"), np.load(cache_dir / "logits.npy", mmap_mode="r"))
