"""Where models run: one place that reads a device option and checks it against this machine.

    parse_device("cuda:1")     → "cuda:1"          (no torch: the CLI and the library check options early)
    resolve_device("auto")     → torch.device       (imports torch; ModelError when CUDA is asked for and absent)
    device_type("auto")        → "cuda" or "cpu"   (to compare with a loaded model's ``device.type``)

Accepted spellings: ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda``, ``cuda:N``.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from imgsearch.errors import ModelError, UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["parse_device", "resolve_device", "device_type", "DEVICE_HELP"]

DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto = cuda when available)."
_DEVICE_RE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def parse_device(text: str, option: str = "--device") -> str:
    """``text`` checked and normalised (stripped, lower case): one of auto, cpu, cuda, cuda:N.

    Never imports torch. :class:`UserError` (one line naming ``option``) for anything else."""
    raw = text if isinstance(text, str) else str(text)   # a torch.device prints as "cpu" / "cuda:0"
    device = raw.strip().lower()
    if not _DEVICE_RE.fullmatch(device):
        raise UserError(f"{option} must be auto, cpu, cuda or cuda:N, not {raw!r}")
    return device


def resolve_device(text: "str | torch.device | None" = "auto") -> "torch.device":
    """The torch device for ``text`` (None = auto). :class:`UserError` for a bad spelling;
    :class:`ModelError` when CUDA (or that CUDA GPU) is asked for but this machine does not have it."""
    import torch

    if isinstance(text, torch.device):
        return text
    device = parse_device("auto" if text is None else text)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for, but CUDA is not available on this machine "
                         "(torch sees no GPU); use --device cpu or auto")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ModelError(f"device {device!r} was asked for, but this machine has {count} CUDA GPU"
                         f"{'' if count == 1 else 's'} (cuda:0{f'..cuda:{count - 1}' if count > 1 else ''})")
    return torch.device(device)


def device_type(text: str | None) -> str:
    """"cpu" or "cuda": the kind of device ``text`` (None = auto) means here, comparable with a loaded
    model's ``device.type``. Only ``auto`` imports torch (to ask whether a GPU is there)."""
    device = parse_device("auto" if text is None else text)
    if device == "auto":
        try:
            import torch
        except ImportError:  # pragma: no cover - no torch: nothing can run on a GPU
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.partition(":")[0]
