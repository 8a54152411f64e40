"""Self-critical sequence training: fine-tune a caption decoder on CIDEr-D directly.

Cross-entropy training teaches the decoder to predict the next reference word; what we are judged
on (and what makes captions useful to search) is a whole-caption metric. SCST (Rennie et al. 2017)
treats the decoder as a policy: sample captions, score each with CIDEr-D against the photo's
references, and raise the log-probability of the samples that beat the baseline. The baseline here
is the mean reward of the *other* samples of the same photo (Luo 2020, "A better variant of
self-critical sequence training"), so no greedy decode is needed.

  for each batch of B photos:
      K captions per photo                        (B·K, ≤ max_len) under no_grad
      r = CIDEr-D(caption, references)            (B, K)
      advantage = r - mean of the other K-1       (B, K)
      loss = -mean(advantage · Σ_t log p(w_t))    one teacher-forced pass over the captions

The K captions are either the K-best of a beam search (``sampling="beam"``, as the M² Transformer
does — the default here) or K multinomial samples (``"multinomial"``, Luo 2020). Measured on
Flickr8k dev from the shipped cross-entropy checkpoint (beam 3 CIDEr 0.485): multinomial samples at
lr 2e-5 drove dev CIDEr *down* (0.472 after one epoch, 0.349 after two, train reward falling too):
samples from a label-smoothed decoder are too noisy for a 6,000-photo training set.

``CiderD`` is pycocoevalcap's CIDEr-D (σ = 6, clipped n-gram counts, ×10) with the document
frequencies taken once from the training references, as SCST implementations do.
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import coco_tokenize


def _ngrams(words: list[str], n: int = 4) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i:i + k])] += 1
    return c


class CiderD:
    """CIDEr-D of a hypothesis against one image's references (pycocoevalcap's formula)."""

    def __init__(self, references: list[list[str]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        ref_counts = [[_ngrams(coco_tokenize(r).split(), n) for r in refs] for refs in references]
        df: Counter = Counter()
        for refs in ref_counts:
            for ng in set(ng for c in refs for ng in c):
                df[ng] += 1
        self.df = df
        self.ref_len = math.log(float(len(references)))
        self.refs = [[self._vec(c) for c in refs] for refs in ref_counts]

    def _vec(self, counts: Counter):
        vec = [dict() for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for ng, tf in counts.items():
            k = len(ng) - 1
            v = float(tf) * (self.ref_len - math.log(max(1.0, self.df.get(ng, 0.0))))
            vec[k][ng] = v
            norm[k] += v * v
            if k == 1:                 # pycocoevalcap counts bigrams as the "length" (kept for fidelity)
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, hypothesis: str, image: int) -> float:
        vh, nh, lh = self._vec(_ngrams(coco_tokenize(hypothesis).split(), self.n))
        total = np.zeros(self.n)
        for vr, nr, lr in self.refs[image]:
            pen = math.exp(-((lh - lr) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                ref = vr[k]
                val = 0.0
                for ng, v in vh[k].items():
                    r = ref.get(ng)
                    if r is not None:
                        val += min(v, r) * r
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * pen
        return float(total.mean() / len(self.refs[image]) * 10.0)


@torch.no_grad()
def sample_captions(decoder, memory, n_rows: int, bos: int, eos: int, max_len: int,
                    banned: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one caption per memory row: (n_rows, T) token ids, each ending in <end> (then <pad>=0)."""
    device = next(decoder.parameters()).device
    state = decoder.start(memory)
    prev = torch.full((n_rows,), bos, dtype=torch.long, device=device)
    out = torch.zeros((n_rows, max_len + 1), dtype=torch.long, device=device)
    alive = torch.ones(n_rows, dtype=torch.bool, device=device)
    for t in range(max_len + 1):
        logp, state = decoder.step(state, prev)                       # (n, V)
        logp = logp.float()
        logp[:, list(banned)] = float("-inf")
        if t == 0:
            logp[:, eos] = float("-inf")                              # at least one word
        if t == max_len:
            w = torch.full_like(prev, eos)
        else:
            w = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)   # (n,)
        w = torch.where(alive, w, torch.zeros_like(w))
        out[:, t] = w
        alive &= w != eos
        prev = w
        if not alive.any():
            return out[:, :t + 1]
    return out


def sequence_logprob(decoder, memory, seqs: torch.Tensor, bos: int, pad: int) -> torch.Tensor:
    """Σ_t log p(w_t | w_<t, image) of each sampled caption (incl. its <end>): (n,)."""
    inp = torch.cat([torch.full_like(seqs[:, :1], bos), seqs[:, :-1]], 1)   # (n, T)
    logits = decoder(memory, inp).float()                                   # (n, T, V)
    logp = F.log_softmax(logits, -1).gather(2, seqs[:, :, None]).squeeze(2)  # (n, T)
    return (logp * (seqs != pad)).sum(1)


def scst_finetune(captioner, grid, references: list[list[str]], dev_grid, dev_references: list[list[str]],
                  out: Path, epochs: int = 4, lr: float = 2e-5, samples: int = 5, batch_size: int = 32,
                  max_len: int = 16, seed: int = 0, resume: bool = True, eval_beam: int = 3,
                  sampling: str = "beam", log=print) -> dict:
    """Fine-tune ``captioner.decoder`` in place on CIDEr-D; keeps the best (dev CIDEr, beam ``eval_beam``)
    weights in ``out/best.pt`` and returns the history. Resumable from ``out/scst_last.pt``."""
    from .beam import beam_search
    from .train import evaluate_grid   # local: train imports this module

    if sampling not in ("beam", "multinomial"):
        raise ValueError("sampling must be 'beam' or 'multinomial'")

    decoder, vocab = captioner.decoder, captioner.vocab
    device = captioner.device
    out.mkdir(parents=True, exist_ok=True)
    cider = CiderD(references)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    banned = (vocab.pad, vocab.bos, vocab.unk)
    feats = torch.from_numpy(np.ascontiguousarray(grid))                    # (N, 49, C) fp16
    n_images = len(feats)
    steps = math.ceil(n_images / batch_size)
    state_path = out / "scst_last.pt"
    epoch0, history, best = 0, [], None
    if resume and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        decoder.load_state_dict(st["decoder"])
        opt.load_state_dict(st["optimizer"])
        epoch0, history, best = st["epoch"], list(st["history"]), st["best"]
        log(f"SCST resumed after epoch {epoch0} (best dev CIDEr {best:.4f})")
    if best is None:
        decoder.eval()
        scores, _ = evaluate_grid(captioner, dev_grid, dev_references, beam=eval_beam)
        best = scores["CIDEr"]
        history.append({"epoch": 0, **scores})
        log(f"SCST start: dev CIDEr {best:.4f} BLEU-4 {scores['BLEU-4']:.4f} (beam {eval_beam})")
    for epoch in range(epoch0, epochs):
        decoder.eval()                       # the policy is the deterministic network: no dropout
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(n_images, generator=g)
        t0, reward_sum, n_seen = time.time(), 0.0, 0
        for step in range(steps):
            imgs = order[step * batch_size:(step + 1) * batch_size]
            B = len(imgs)
            x = feats[imgs].to(device).float()                              # (B, 49, C)
            rows = torch.arange(B, device=device).repeat_interleave(samples)  # (B·K,)
            idx = imgs.tolist()
            with torch.no_grad():
                if sampling == "beam":
                    hyps = beam_search(decoder, decoder.encode_memory(x), B, vocab.bos, vocab.eos, beam=samples,
                                       max_len=max_len, alpha=captioner.alpha, banned=banned,
                                       no_repeat_ngram=captioner.no_repeat_ngram)
                    owner = [b for b, hs in enumerate(hyps) for _ in hs]
                    toks = [h.tokens + [vocab.eos] for hs in hyps for h in hs]
                    seqs = torch.zeros((len(toks), max(map(len, toks))), dtype=torch.long)
                    for i, t in enumerate(toks):
                        seqs[i, :len(t)] = torch.tensor(t)
                    seqs = seqs.to(device)
                else:
                    owner = rows.tolist()
                    mem = decoder.select(decoder.encode_memory(x), rows)
                    seqs = sample_captions(decoder, mem, B * samples, vocab.bos, vocab.eos, max_len, banned, g)
            owner_t = torch.tensor(owner)
            r = torch.tensor([cider.score(vocab.decode(s), idx[o]) for s, o in zip(seqs.tolist(), owner)])
            total = torch.zeros(B).index_add_(0, owner_t, r)
            count = torch.zeros(B).index_add_(0, owner_t, torch.ones_like(r))
            others = (count[owner_t] - 1).clamp(min=1)
            adv = torch.where(count[owner_t] > 1, r - (total[owner_t] - r) / others, torch.zeros_like(r))
            adv = adv.to(device)                                             # leave-one-out baseline
            mem = decoder.select(decoder.encode_memory(x), owner_t.to(device))   # with grad this time
            lp = sequence_logprob(decoder, mem, seqs, vocab.bos, vocab.pad)  # (n,)
            loss = -(adv * lp).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            reward_sum += float(r.sum())
            n_seen += len(r)
            rate = (step + 1) * batch_size / max(time.time() - t0, 1e-9)
            if step % 20 == 0 or step == steps - 1:
                log(f"SCST epoch {epoch + 1}/{epochs} step {step + 1}/{steps} train CIDEr-D "
                    f"{reward_sum / n_seen:.3f} {rate:.1f} photos/s eta {(steps - step - 1) * batch_size / rate:.0f}s")
        decoder.eval()
        scores, _ = evaluate_grid(captioner, dev_grid, dev_references, beam=eval_beam)
        entry = {"epoch": epoch + 1, "train_reward": reward_sum / n_seen, "seconds": time.time() - t0, **scores}
        improved = scores["CIDEr"] > best
        if improved:
            best = scores["CIDEr"]
            captioner.save(out / "best.pt", info={"scst_epoch": epoch + 1, "dev": entry})
        history.append(entry)
        log(f"SCST epoch {epoch + 1}: dev CIDEr {scores['CIDEr']:.4f} BLEU-4 {scores['BLEU-4']:.4f} "
            f"train reward {entry['train_reward']:.3f}" + (" (best)" if improved else ""))
        torch.save({"decoder": decoder.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                    "history": history, "best": best}, out / "scst_last.tmp")
        (out / "scst_last.tmp").replace(state_path)
    return {"best_dev_cider": best, "history": history}
