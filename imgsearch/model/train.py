"""Training the caption decoder on COCO-style captions over cached encoder features.

    from imgsearch.model.train import TrainConfig, train
    result = train(TrainConfig(captions="captions_train.json", images="images/",
                               dev_captions="captions_dev.json", out="runs/cap"))

Encoder features are computed once and cached (model/features.py); each epoch runs only the
decoder: teacher forcing (optionally scheduled sampling), label-smoothed cross-entropy, AdamW,
gradient clipping, linear warm-up then cosine decay, dev CIDEr after every epoch with early
stopping, a resumable checkpoint every epoch. Mixed precision on CUDA.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imgsearch.files import atomic_open
from imgsearch.text import EMBED_DIM

from .captioner import Captioner, resolve_device
from .config import ProjectionTrainConfig, TrainConfig
from .coco import load_captions
from .decoder import DecoderConfig, build_decoder
from .encoder import load_encoder
from .features import feature_cache
from .vocab import Vocab


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class _Log:
    """One status line: rewritten in place on a terminal, a plain line now and then otherwise."""

    def __init__(self, stream=None):
        stream = stream or sys.stderr   # looked up now, not at import (stderr may have been replaced since)
        self.stream, self.tty, self.last = stream, stream.isatty(), 0.0

    def __call__(self, msg: str, final: bool = False) -> None:
        now = time.time()
        if self.tty:
            self.stream.write("\r\033[K" + msg + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self.last > 30:
            self.stream.write(msg + "\n")
            self.stream.flush()
            self.last = now


def encode_captions(vocab: Vocab, captions: list[list[str]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All captions → (N, max_len + 2) token ids padded with <pad>, and (N,) image row of each."""
    rows, img = [], []
    for i, caps in enumerate(captions):
        for c in caps:
            ids = vocab.encode(c, max_len)
            rows.append(ids + [vocab.pad] * (max_len + 2 - len(ids)))
            img.append(i)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(img, dtype=torch.long)


def evaluate_grid(captioner: Captioner, grid, references: list[list[str]], beam: int = 3,
                  batch_size: int = 100) -> tuple[dict, list[str]]:
    """Caption every cached grid and score against the references (BLEU-1..4, CIDEr)."""
    from .metrics import corpus_scores

    hyps: list[str] = []
    for s in range(0, len(references), batch_size):
        g = torch.from_numpy(np.asarray(grid[s:s + batch_size], dtype=np.float32))
        hyps += [c[0][0] for c in captioner.captions_from_grid(g, beam=beam, n_best=1)]
    scores = corpus_scores({i: h for i, h in enumerate(hyps)}, {i: r for i, r in enumerate(references)})
    return scores, hyps


def train(cfg: TrainConfig, log=None) -> dict:
    log = log or _Log()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_all(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache) if cfg.cache else out / "features"

    train_set = load_captions(cfg.captions)
    encoder = load_encoder(cfg.encoder, device)
    say = lambda split: (lambda d, n, r: log(f"features {split}: {d}/{n} images, {r:.1f} img/s", final=d == n))
    grid, _ = feature_cache(encoder, cfg.images, train_set.file_names, cache / f"train_{cfg.encoder}_{cfg.resize}",
                            resize=cfg.resize, progress=say("train"))
    dev = None
    if cfg.dev_captions:
        dev_set = load_captions(cfg.dev_captions)
        if cfg.max_dev_images:
            dev_set.file_names, dev_set.captions = dev_set.file_names[:cfg.max_dev_images], dev_set.captions[:cfg.max_dev_images]
        dev_grid, _ = feature_cache(encoder, cfg.dev_images or cfg.images, dev_set.file_names,
                                    cache / f"dev_{cfg.encoder}_{cfg.resize}", resize=cfg.resize, progress=say("dev"))
        dev = (dev_grid, dev_set.captions)

    resume_path = out / "last.pt"
    state = torch.load(resume_path, map_location="cpu", weights_only=True) if cfg.resume and resume_path.exists() else None
    vocab = Vocab(list(state["vocab"])) if state else Vocab.build([c for cs in train_set.captions for c in cs], cfg.min_count)
    head = encoder.spec.channels                                              # the decoder reads the head channels
    dcfg = DecoderConfig(kind=cfg.kind, vocab_size=len(vocab), feat_dim=head, n_cells=grid.shape[1],
                         d_model=cfg.embed_size, hidden=cfg.hidden_size, n_layers=cfg.layers, n_heads=cfg.heads,
                         dropout=cfg.dropout, max_len=cfg.max_len)
    decoder = build_decoder(dcfg).to(device)
    feats = torch.from_numpy(np.ascontiguousarray(grid[..., :head]))          # (N, 49, 1280) float16, in RAM
    tokens, img_of = encode_captions(vocab, train_set.captions, cfg.max_len)  # (M, T), (M,)
    caps_of = [[] for _ in range(len(feats))]                                 # caption rows of each image
    for row, i in enumerate(img_of.tolist()):
        caps_of[i].append(row)
    n_images = len(feats)
    steps_per_epoch = math.ceil(n_images / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs

    decay = [p for n, p in decoder.named_parameters() if p.dim() >= 2 and "pos" not in n]
    no_decay = [p for n, p in decoder.named_parameters() if p.dim() < 2 or "pos" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup_steps, total_steps))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    epoch0, best, bad_epochs, history = 0, -1.0, 0, []
    if state:
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch0, best, bad_epochs, history = state["epoch"], state["best"], state["bad_epochs"], list(state["history"])
        torch.set_rng_state(state["rng"])
        log(f"resumed from {resume_path} after epoch {epoch0} (best dev CIDEr {best:.4f})", final=True)

    captioner = Captioner(encoder, decoder, vocab, dcfg, version="training", resize=cfg.resize)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t_start = time.time()
    for epoch in range(epoch0, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        decoder.train()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n_images, generator=g)
        t0, seen, loss_sum = time.time(), 0, 0.0
        for step in range(steps_per_epoch):
            # a batch is ``batch_size`` images with all their captions: the image side runs once per image
            imgs = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            rows = [r for i in imgs.tolist() for r in caps_of[i]]
            which = torch.tensor([j for j, i in enumerate(imgs.tolist()) for _ in caps_of[i]], device=device)
            seq = tokens[rows]
            T = int((seq != vocab.pad).sum(1).max())
            seq = seq[:, :T].to(device)                                          # (M, T) captions of the batch
            inp, tgt = seq[:, :-1], seq[:, 1:]
            x = feats[imgs].to(device).float()                                   # (B, 49, C)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                memory = decoder.select(decoder.encode_memory(x), which)         # per caption (M, ...)
                if cfg.teacher_forcing < 1.0:                                    # scheduled sampling, two passes
                    with torch.no_grad():
                        pred = decoder(memory, inp).argmax(-1)                   # (B, T-1): guesses for tgt
                    swap = torch.rand(inp.shape, device=device) > cfg.teacher_forcing
                    swap[:, 0] = False                                           # <start> is always given
                    inp = torch.where(swap & (inp != vocab.pad), torch.roll(pred, 1, 1), inp)
                logits = decoder(memory, inp)                                    # (B, T-1, V)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                       ignore_index=vocab.pad, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(rows)
            loss_sum += loss.item()
            rate = seen / max(time.time() - t0, 1e-9)
            eta = (len(tokens) - seen) / max(rate, 1e-9)
            log(f"epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps_per_epoch} loss {loss_sum / (step + 1):.3f} "
                f"{rate:.0f} captions/s eta {eta:.0f}s lr {sched.get_last_lr()[0]:.2e}")
        entry = {"epoch": epoch + 1, "loss": loss_sum / steps_per_epoch, "seconds": time.time() - t0}
        decoder.eval()
        if dev is not None:
            scores, _ = evaluate_grid(captioner, dev[0], dev[1], beam=cfg.eval_beam)
            entry.update(scores)
            metric = scores["CIDEr"]
        else:
            metric = -entry["loss"]
        improved = metric > best
        if improved:
            best, bad_epochs = metric, 0
            captioner.save(out / "best.pt", info={"epoch": epoch + 1, "dev": entry, "train_config": asdict(cfg)})
        else:
            bad_epochs += 1
        history.append(entry)
        log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in entry.items()) + (" (best)" if improved else ""), final=True)
        with atomic_open(resume_path) as f:
            torch.save({"decoder": decoder.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": epoch + 1, "best": best, "bad_epochs": bad_epochs, "history": history,
                        "rng": torch.get_rng_state(), "vocab": list(vocab.words)}, f)
        (out / "history.json").write_text(json.dumps(history, indent=2))
    result = {"best_dev_cider": best, "history": history, "checkpoint": str(out / "best.pt"),
              "seconds": time.time() - t_start}
    if cfg.scst_epochs > 0 and dev is not None:
        result["scst"] = _scst_phase(cfg, out, encoder, device, grid, train_set.captions, dev, log)
        result["best_dev_cider"] = max(best, result["scst"]["best_dev_cider"])
    return result


def _scst_phase(cfg: TrainConfig, out: Path, encoder, device, grid, references, dev, log) -> dict:
    """Fine-tune the best cross-entropy checkpoint on CIDEr-D (model/scst.py) in OUT/scst; when it beats
    the cross-entropy model on dev (beam 3), it becomes OUT/best.pt (the cross-entropy one stays as best_xe.pt)."""
    import shutil

    from .captioner import read_checkpoint
    from .scst import scst_finetune

    xe_best = out / "best_xe.pt"
    if not xe_best.exists():
        shutil.copy2(out / "best.pt", xe_best)
    ck = read_checkpoint(xe_best)
    cap = Captioner.from_checkpoint(ck, device, version="scst", encoder=encoder)
    head = encoder.spec.channels
    report = scst_finetune(cap, grid[..., :head], references, dev[0], dev[1], out / "scst", epochs=cfg.scst_epochs,
                           lr=cfg.scst_lr, samples=cfg.scst_candidates, batch_size=cfg.batch_size,
                           max_len=cfg.max_len, seed=cfg.seed, resume=cfg.resume,
                           log=lambda m: log(m, final=True))
    scst_best = out / "scst" / "best.pt"
    if scst_best.exists():
        best = read_checkpoint(scst_best)
        cap = Captioner.from_checkpoint(best, device, version="scst", encoder=encoder)
        info = dict(ck.get("info", {}))
        info.update({"scst_epoch": best["info"].get("scst_epoch"), "dev": best["info"].get("dev"),
                     "dev_cross_entropy": report["history"][0], "train_config": asdict(cfg)})
        cap.save(out / "best.pt", info=info)
    (out / "scst_history.json").write_text(json.dumps(report["history"], indent=2))
    return report


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


# ----------------------------------------------------------------------------- photo → text projection

def _caption_embeddings(captions: list[list[str]], per_image: int, path: Path, log) -> np.ndarray:
    """(N, per_image, EMBED_DIM) MiniLM embeddings of each photo's references, cached in ``path``."""
    from imgsearch.text.embed import TextEmbedder

    flat = [caps[j % len(caps)] for caps in captions for j in range(per_image)]
    key = hashlib.sha256("\n".join(flat).encode()).hexdigest()[:16]
    cached = path.with_name(f"{path.stem}-{key}.npy")
    if cached.exists():
        return np.load(cached)
    emb = TextEmbedder.load()
    out = np.empty((len(flat), EMBED_DIM), dtype=np.float32)
    for s in range(0, len(flat), 2048):
        out[s:s + 2048] = emb.embed(flat[s:s + 2048], batch_size=256)
        log(f"caption embeddings: {min(s + 2048, len(flat))}/{len(flat)}", final=s + 2048 >= len(flat))
    out = out.reshape(len(captions), per_image, EMBED_DIM)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, out)
    return out


def train_projection_head(cfg: ProjectionTrainConfig, log=None):
    """Train the photo→MiniLM projection on cached encoder features; returns (model, report)."""
    from .projection import ProjectionConfig, train_projection

    log = log or _Log()
    _seed_all(cfg.seed)
    if not cfg.dev_captions:
        raise ValueError("the projection needs --dev-captions for early stopping on dev Recall@K")
    out = Path(cfg.out)
    cache = Path(cfg.cache) if cfg.cache else out / "features"
    encoder = load_encoder(cfg.encoder, "cpu")
    train_set, dev_set = load_captions(cfg.captions), load_captions(cfg.dev_captions)
    grid, _ = feature_cache(encoder, cfg.images, train_set.file_names, cache / f"train_{cfg.encoder}_{cfg.resize}",
                            resize=cfg.resize)
    dev_grid, _ = feature_cache(encoder, cfg.dev_images or cfg.images, dev_set.file_names,
                                cache / f"dev_{cfg.encoder}_{cfg.resize}", resize=cfg.resize)
    text = _caption_embeddings(train_set.captions, cfg.captions_per_image, cache / "minilm_train", log)
    dev_text = _caption_embeddings(dev_set.captions, cfg.captions_per_image, cache / "minilm_dev", log)
    pcfg = ProjectionConfig(feat_dim=grid.shape[2], hidden=cfg.hidden, dropout=cfg.dropout,
                            feature_dropout=cfg.feature_dropout)
    model, report = train_projection(grid, text, dev_grid, dev_text, pcfg, epochs=cfg.epochs,
                                     batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     patience=cfg.patience, seed=cfg.seed, swa_from=cfg.swa_from,
                                     log=lambda m: log(m, final=True))
    torch.save({"config": pcfg.to_dict(), "state": model.state_dict(), "report": report}, out / "projection.pt")
    return model, report


def export_checkpoint(run_dir: str | Path, dest: str | Path, half: bool = True) -> Path:
    """Combine a run's best captioner and its projection (if trained) into one shippable checkpoint."""
    from .captioner import Captioner, read_checkpoint
    from .projection import ProjectionConfig, build_projection

    run_dir = Path(run_dir)
    ck = read_checkpoint(run_dir / "best.pt")
    cap = Captioner.from_checkpoint(ck, torch.device("cpu"), version="export")
    info = dict(ck.get("info", {}))
    proj_path = run_dir / "projection.pt"
    if proj_path.exists():
        p = torch.load(proj_path, map_location="cpu", weights_only=True)
        cap.projection = build_projection(ProjectionConfig(**p["config"]))
        cap.projection.load_state_dict(p["state"])
        cap.projection.eval()
        info["projection_dev"] = p["report"]["best"]
    return cap.save(dest, half=half, info=info)
