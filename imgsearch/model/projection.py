"""Photo → text projection: embeds a photo straight into the all-MiniLM-L6-v2 space (384-d),
so a query can be matched against the photo itself, not only against its generated caption.

    z = proj(grid)          # grid (B, 49, 1712) → (B, 384), compare by cosine with MiniLM text embeddings

Design: the grid is standardised with statistics of the training features, pooled three ways —
mean, max, and a learned attention pool (a few queries attending over the 49 cells) — and mapped
by a 2-layer MLP with a residual linear path. Trained with a symmetric InfoNCE loss against the
frozen MiniLM embeddings of each photo's human captions (every caption of a photo is a positive),
with a learnable temperature (CLIP, Radford et al. 2021).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProjectionConfig:
    feat_dim: int = 1712             # encoder grid channels (head 1280 + mid-level 432)
    out_dim: int = 384
    hidden: int = 1024
    attn_queries: int = 4
    attn_dim: int = 256
    dropout: float = 0.5
    feature_dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)


class PhotoProjection(nn.Module):
    def __init__(self, cfg: ProjectionConfig):
        super().__init__()
        self.cfg = cfg
        C, D = cfg.feat_dim, cfg.out_dim
        self.register_buffer("feat_mean", torch.zeros(C))
        self.register_buffer("feat_std", torch.ones(C))
        self.queries = nn.Parameter(torch.randn(cfg.attn_queries, cfg.attn_dim) * 0.02)
        self.attn_key = nn.Linear(C, cfg.attn_dim, bias=False)
        pooled = C * 2 + C                                   # mean, max, attention pool (queries averaged)
        self.in_drop = nn.Dropout(cfg.feature_dropout)
        self.mlp = nn.Sequential(nn.Linear(pooled, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.hidden, D))
        self.skip = nn.Linear(pooled, D)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def pool(self, grid: torch.Tensor) -> torch.Tensor:
        x = (grid - self.feat_mean) / self.feat_std          # (B, 49, C)
        x = self.in_drop(x)
        keys = self.attn_key(x)                              # (B, 49, A)
        att = torch.einsum("qa,bna->bqn", self.queries, keys) / math.sqrt(keys.shape[-1])   # (B, Q, 49)
        att_pool = torch.einsum("bqn,bnc->bqc", att.softmax(-1), x).mean(1)   # (B, C)
        return torch.cat([x.mean(1), x.amax(1), att_pool], dim=-1)          # (B, 3C)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        h = self.pool(grid)                                  # (B, 3C)
        return self.mlp(h) + self.skip(h)                    # (B, 384), unnormalised


def build_projection(cfg: ProjectionConfig) -> PhotoProjection:
    return PhotoProjection(cfg)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE.

    img (B, D) and txt (M, D) are L2-normalised; owner (M,) gives the image of each caption.
    Image→text: all of an image's captions are positives. Text→image: the caption's own image.
    """
    logits = scale * txt @ img.T                                        # (M, B)
    t2i = F.cross_entropy(logits, owner)
    pos = owner[:, None] == torch.arange(img.shape[0], device=img.device)[None]   # (M, B)
    lg = logits.T                                                       # (B, M)
    i2t = -(torch.logsumexp(lg.masked_fill(~pos.T, float("-inf")), 1) - torch.logsumexp(lg, 1)).mean()
    return (t2i + i2t) / 2


def recall_at_k(img_emb: np.ndarray, txt_emb: np.ndarray, owner: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Text→image retrieval: each caption queries all images. Returns R@k and the median rank (1-based)."""
    sims = txt_emb @ img_emb.T                                          # (M, N)
    true = sims[np.arange(len(owner)), owner][:, None]
    ranks = (sims > true).sum(1) + 1
    out = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    return out


def train_projection(grid: np.ndarray, text: np.ndarray, dev_grid: np.ndarray, dev_text: np.ndarray,
                     cfg: ProjectionConfig | None = None, epochs: int = 30, batch_size: int = 256, lr: float = 1e-3,
                     weight_decay: float = 0.05, patience: int = 4, seed: int = 0, hflip: bool = True,
                     swa_from: int | None = None, log=print) -> tuple[PhotoProjection, dict]:
    """Train on (N, 49, C) grids and (N, P, 384) caption embeddings; early-stop on dev mean R@{1,5,10}.

    ``hflip`` mirrors the feature grid of a random half of each batch (the grid of a mirrored photo,
    approximately): cheap augmentation against overfitting 6,000 photos.
    ``swa_from``: stochastic weight averaging (Izmailov et al. 2018) — run all ``epochs`` (no early stop)
    and return the mean of the weights after epochs swa_from..epochs (1-based), an ensemble's gain at
    one model's cost.
    """
    torch.manual_seed(seed)
    cfg = cfg or ProjectionConfig(feat_dim=grid.shape[2])
    model = PhotoProjection(cfg)
    feats = torch.from_numpy(np.asarray(grid, dtype=np.float32))
    sample = feats[torch.randperm(len(feats))[:2000]]
    model.feat_mean.copy_(sample.mean((0, 1)))
    model.feat_std.copy_(sample.std((0, 1)).clamp_min(1e-3))
    txt = torch.from_numpy(np.asarray(text, dtype=np.float32))                # (N, P, 384)
    N, P = txt.shape[:2]
    dev_feats = torch.from_numpy(np.asarray(dev_grid, dtype=np.float32))
    dev_txt = np.asarray(dev_text, dtype=np.float32).reshape(-1, dev_text.shape[-1])
    dev_owner = np.repeat(np.arange(len(dev_grid)), dev_text.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(N / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best, best_state, bad, history = -1.0, None, 0, []
    swa_sum, swa_n = None, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(N)
        t0, total = time.time(), 0.0
        for s in range(0, N, batch_size):
            idx = order[s:s + batch_size]
            x = feats[idx]                                                    # (B, 49, C)
            if hflip:
                side = int(round(math.sqrt(x.shape[1])))
                flip = torch.rand(len(idx)) < 0.5
                mirrored = x.view(len(idx), side, side, -1).flip(2).reshape(x.shape)
                x = torch.where(flip[:, None, None], mirrored, x)
            img = F.normalize(model(x), dim=-1)                               # (B, 384)
            t = F.normalize(txt[idx].reshape(-1, txt.shape[-1]), dim=-1)      # (B·P, 384)
            owner = torch.arange(len(idx)).repeat_interleave(P)
            loss = contrastive_loss(img, t, owner, model.logit_scale.exp().clamp(max=100))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            dev_img = F.normalize(model(dev_feats), dim=-1).numpy()
        r = recall_at_k(dev_img, dev_txt, dev_owner)
        score = (r["R@1"] + r["R@5"] + r["R@10"]) / 3
        history.append({"epoch": epoch + 1, "loss": total / N, **r, "seconds": time.time() - t0})
        log(f"projection epoch {epoch + 1}: loss {total / N:.3f} dev R@1 {r['R@1']:.3f} R@5 {r['R@5']:.3f} "
            f"R@10 {r['R@10']:.3f} median rank {r['median_rank']:.0f}")
        if swa_from is not None:
            if epoch + 1 >= swa_from:
                state = model.state_dict()
                swa_sum = ({k: v.detach().clone().double() for k, v in state.items()} if swa_sum is None
                           else {k: swa_sum[k] + v.detach().double() for k, v in state.items()})
                swa_n += 1
            continue
        if score > best:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if swa_from is not None:
        if swa_n == 0:
            raise ValueError(f"swa_from={swa_from} is past the last epoch ({epochs})")
        model.load_state_dict({k: (v / swa_n).to(model.state_dict()[k].dtype) for k, v in swa_sum.items()})
        model.eval()
        with torch.no_grad():
            dev_img = F.normalize(model(dev_feats), dim=-1).numpy()
        r = recall_at_k(dev_img, dev_txt, dev_owner)
        swa = {"epoch": f"SWA {swa_from}-{epochs}", "loss": None, **r, "seconds": 0.0}
        log(f"projection SWA of epochs {swa_from}-{epochs}: dev R@1 {r['R@1']:.3f} R@5 {r['R@5']:.3f} "
            f"R@10 {r['R@10']:.3f} median rank {r['median_rank']:.0f}")
        return model, {"history": history + [swa], "best": swa}
    model.load_state_dict(best_state)
    model.eval()
    return model, {"history": history, "best": max(history, key=lambda h: h["R@1"] + h["R@5"] + h["R@10"])}
