"""Training settings (no torch import: the CLI reads the defaults for its --help)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where the training data, the cached encoder features and the checkpoints are."""
    captions: str = ""                 # COCO-style caption JSON (training split)
    images: str = ""                   # folder holding the training images
    dev_captions: str | None = None    # dev split for model selection / early stopping
    dev_images: str | None = None      # defaults to ``images``
    out: str = "runs/captioner"        # checkpoint folder
    cache: str | None = None           # feature cache folder (default: <out>/features)
    encoder: str = "lite0"
    resize: str = "squash"


@dataclass
class TrainConfig(DataConfig):
    """The caption decoder; the defaults reproduce the shipped checkpoint."""
    kind: str = "transformer"          # transformer | lstm
    embed_size: int = 256              # d_model
    hidden_size: int = 1024            # feed-forward width (transformer) / LSTM hidden size
    layers: int = 3
    heads: int = 4
    dropout: float = 0.3
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 300
    label_smoothing: float = 0.1
    teacher_forcing: float = 1.0       # probability of feeding the reference word (1.0 = pure teacher forcing)
    grad_clip: float = 1.0
    batch_size: int = 32               # images per step, each with all its captions
    epochs: int = 12
    patience: int = 3                  # epochs without a better dev CIDEr before stopping
    max_len: int = 22
    min_count: int = 5
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    eval_beam: int = 0                 # beam for the per-epoch dev evaluation (0 = greedy, fast)
    max_dev_images: int | None = None
    threads: int | None = None
    scst_epochs: int = 3               # CIDEr-D fine-tuning epochs after cross-entropy (model/scst.py; needs dev)
    scst_lr: float = 1e-5
    scst_candidates: int = 5           # beam-search candidates per photo, each rewarded by CIDEr-D


@dataclass
class ProjectionTrainConfig(DataConfig):
    """The photo→text projection; the defaults reproduce the shipped one."""
    hidden: int = 1024
    dropout: float = 0.5
    feature_dropout: float = 0.3
    lr: float = 2e-3
    weight_decay: float = 0.1
    batch_size: int = 512
    epochs: int = 8                    # one-cycle schedule; it overfits 6,000 photos after a few epochs
    patience: int = 3                  # (early stopping, when swa_from is None)
    swa_from: int | None = 2           # average the weights after epochs 2..8 (stochastic weight averaging)
    seed: int = 0
    captions_per_image: int = 5        # MiniLM embeddings of this many references per photo (fewer → repeated)
