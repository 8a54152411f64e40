"""Batched beam search with length normalisation.

Every image of the batch keeps ``beam`` live hypotheses; all B·beam rows advance through the
decoder in one call per time step. A hypothesis that emits <end> leaves the beam for the image's
pool of finished captions with score = (sum of log-probabilities) / (length ** alpha), where length
counts the words and the <end> token. An image is done once its pool holds ``beam`` captions
(or at ``max_len``, when its live hypotheses are finished as they stand). Each image is searched
independently of the others, so a batch gives the same captions as one image at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Hypothesis:
    tokens: list[int]   # words only (no <start>/<end>)
    score: float        # length-normalised log-probability
    logprob: float      # raw sum of log-probabilities


@torch.inference_mode()
def beam_search(decoder, memory, batch_size: int, bos: int, eos: int, beam: int = 3,
                max_len: int = 22, alpha: float = 1.0, n_best: int | None = None,
                banned: tuple[int, ...] = (), no_repeat_ngram: int = 0) -> list[list[Hypothesis]]:
    """Return the ``n_best`` (default ``beam``) captions of each image, best first.

    ``no_repeat_ngram`` = n > 0 forbids any word that would repeat an n-gram already in the
    hypothesis ("a dog is running in front of a dog is running")."""
    if beam < 1:
        raise ValueError("beam size must be at least 1")
    n_best = min(n_best or beam, beam)
    B, K = batch_size, beam
    device = next(decoder.parameters()).device
    rows = torch.arange(B, device=device).repeat_interleave(K)        # image of each of the B·K rows
    state = decoder.start(decoder.select(memory, rows))
    prev = torch.full((B * K,), bos, dtype=torch.long, device=device)
    # only beam 0 is live at the start, so the first step does not pick the same word K times
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    tokens = torch.zeros((B, K, 0), dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B

    for t in range(max_len + 1):
        logp, state = decoder.step(state, prev)                    # (B·K, V)
        logp = logp.float()
        V = logp.shape[-1]
        for b in banned:
            logp[:, b] = float("-inf")
        if t == 0:                                                 # a caption has at least one word
            logp[:, eos] = float("-inf")
        if no_repeat_ngram and t >= no_repeat_ngram - 1:
            _block_repeats(logp, tokens.view(B * K, -1).tolist(), no_repeat_ngram)
        if t == max_len:                                           # out of room: only <end> is allowed
            end_only = torch.full_like(logp, float("-inf"))
            end_only[:, eos] = logp[:, eos]
            logp = end_only
        cand = (scores[:, :, None] + logp.view(B, K, V)).view(B, K * V)   # (B, K·V)
        top_scores, top_idx = cand.topk(2 * K, dim=1)              # (B, 2K) — enough to refill K live beams
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()

        new_scores = torch.full((B, K), float("-inf"), device=device)
        src_rows = torch.arange(B * K, device=device).view(B, K).clone()   # idle rows keep their own state
        new_tok = torch.full((B, K), eos, dtype=torch.long, device=device)
        tok_list = tokens.tolist()
        for b in range(B):
            if done[b]:
                continue
            filled = 0
            for rank, (s, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                if s == float("-inf"):
                    break
                k, w = divmod(idx, V)
                if w == eos:
                    if rank < K:                                   # an <end> among the K best is a finished caption
                        words = tok_list[b][k]
                        finished[b].append(Hypothesis(words, s / (len(words) + 1) ** alpha, s))
                    continue
                if filled < K:
                    new_scores[b, filled] = s
                    src_rows[b, filled] = b * K + k
                    new_tok[b, filled] = w
                    filled += 1
            if len(finished[b]) >= K or filled == 0:
                done[b] = True
        if all(done):
            break
        src = src_rows.view(-1)
        tokens = torch.cat([tokens.view(B * K, -1).index_select(0, src).view(B, K, -1), new_tok[:, :, None]], 2)
        scores = new_scores
        state = decoder.reorder(state, src)
        prev = new_tok.view(-1)

    out = []
    for b in range(B):
        hyps = sorted(finished[b], key=lambda h: (-h.score, h.tokens))
        out.append(hyps[:n_best])
    return out


def _block_repeats(logp: torch.Tensor, rows: list[list[int]], n: int) -> None:
    """Set -inf for every next word that would complete an n-gram the row already contains."""
    for r, seq in enumerate(rows):
        if len(seq) < n - 1:
            continue
        prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
        for i in range(len(seq) - n + 1):
            if tuple(seq[i:i + n - 1]) == prefix:
                logp[r, seq[i + n - 1]] = float("-inf")


@torch.inference_mode()
def greedy(decoder, memory, batch_size: int, bos: int, eos: int, max_len: int = 22,
           banned: tuple[int, ...] = ()) -> list[list[int]]:
    """Most likely word at every step (the reference for beam=1)."""
    device = next(decoder.parameters()).device
    state = decoder.start(memory)
    prev = torch.full((batch_size,), bos, dtype=torch.long, device=device)
    out = [[] for _ in range(batch_size)]
    alive = [True] * batch_size
    for t in range(max_len):
        logp, state = decoder.step(state, prev)
        for w in banned:
            logp[:, w] = float("-inf")
        if t == 0:                                                 # a caption has at least one word
            logp[:, eos] = float("-inf")
        prev = logp.argmax(-1)
        for b, w in enumerate(prev.tolist()):
            if alive[b]:
                if w == eos:
                    alive[b] = False
                else:
                    out[b].append(w)
        if not any(alive):
            break
    return out
