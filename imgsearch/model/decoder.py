"""Caption decoders over the encoder's spatial grid.

Two designs share one interface, so training and beam search do not care which is used:

  memory = dec.encode_memory(grid)            # grid (B, 49, C) → per-image memory
  logits = dec(memory, tokens)                # teacher forcing: (B, T) → (B, T, V)
  state  = dec.start(memory)                  # incremental decoding
  logp, state = dec.step(state, prev_tokens)  # (B,) → (B, V) log-probabilities
  state  = dec.reorder(state, index)          # beam search: pick rows of the state
  memory = dec.select(memory, index)          # rows of the per-image memory (beams, captions)

* TransformerDecoder — pre-norm Transformer decoder (Vaswani et al. 2017) with self-attention
  over the words so far and cross-attention over the 49 grid cells plus a pooled cell.
  Incremental decoding caches self-attention keys/values and the per-image cross-attention
  keys/values, so each beam step costs one token.
* LSTMDecoder — soft-attention LSTM (Xu et al. 2015, "Show, Attend and Tell").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderConfig:
    kind: str = "transformer"   # "transformer" | "lstm"
    vocab_size: int = 0
    feat_dim: int = 1280        # encoder channels
    n_cells: int = 49           # grid cells (7×7 at 224 px)
    d_model: int = 384          # embedding size (and LSTM attention size)
    hidden: int = 1536          # Transformer feed-forward width / LSTM hidden size
    n_layers: int = 3
    n_heads: int = 6
    dropout: float = 0.3
    max_len: int = 22           # words per caption, <start>/<end> excluded

    def to_dict(self) -> dict:
        return asdict(self)


def build_decoder(cfg: DecoderConfig) -> nn.Module:
    if cfg.kind == "transformer":
        return TransformerDecoder(cfg)
    if cfg.kind == "lstm":
        return LSTMDecoder(cfg)
    raise ValueError(f"unknown decoder kind {cfg.kind!r} (transformer | lstm)")


# ----------------------------------------------------------------------------- Transformer

class GridProjection(nn.Module):
    """Encoder grid → decoder memory: linear map, learned cell positions, a pooled 'global' cell."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.feat_dim, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.n_cells + 1, cfg.d_model))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        cells = torch.cat([grid.mean(1, keepdim=True), grid], dim=1)   # (B, 50, C)
        return self.drop(self.norm(self.proj(cells) + self.pos))      # (B, 50, D)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.h, self.dk = n_heads, d // n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.p = dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:   # (B, T, D) → (B, H, T, Dk)
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.dk).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)             # 2 × (B, H, S, Dk)

    def forward(self, x, k, v, causal: bool = False) -> torch.Tensor:
        q = self.heads(self.q(x))                        # (B, H, T, Dk)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=self.p if self.training else 0.0)
        B, H, T, Dk = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * Dk))   # (B, T, D)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.self_attn = nn.LayerNorm(d), Attention(d, cfg.n_heads, cfg.dropout)
        self.ln2, self.cross_attn = nn.LayerNorm(d), Attention(d, cfg.n_heads, cfg.dropout)
        self.ln3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, d))
        self.drop = nn.Dropout(cfg.dropout)

    # The three residual blocks, in order; forward runs them, and so does the query scorer (model/rerank.py)
    # with its own cross-attention over stored cells.
    def attend_self(self, x, cache=None):
        """Self-attention block: x (B, T, D) → (B, T, D), causal over the T tokens; with ``cache`` (the
        previous steps' keys/values, or (None, None)) incremental, returning the extended cache."""
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)             # (B, H, T, Dk)
        if cache is not None:                            # incremental: prepend the cached steps
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache = (k, v)
        return x + self.drop(self.self_attn(h, k, v, causal=cache is None)), cache

    def attend_memory(self, x, attend, *args):
        """Cross-attention block: ``attend(y, *args)`` is the attention of the normalised x over the memory."""
        return x + self.drop(attend(self.ln2(x), *args))

    def feed_forward(self, x):
        return x + self.drop(self.mlp(self.ln3(x)))

    def forward(self, x, mem_kv, cache=None):
        x, cache = self.attend_self(x, cache)
        x = self.attend_memory(x, self.cross_attn, *mem_kv)
        return self.feed_forward(x), cache


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.grid = GridProjection(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len + 2, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight            # tied input/output embeddings
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def encode_memory(self, grid: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        mem = self.grid(grid)                                        # (B, 50, D)
        return [layer.cross_attn.keys_values(mem) for layer in self.layers]  # per layer 2 × (B, H, 50, Dk)

    def embed_tokens(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Word + position embeddings of tokens (B, T) at positions offset.. : (B, T, D)."""
        T = tokens.shape[1]
        pos = torch.arange(offset, offset + T, device=tokens.device)
        return self.drop(self.embed(tokens) + self.pos(pos))         # (B, T, D)

    def run_layers(self, x: torch.Tensor, attend, rows: int | None = None) -> torch.Tensor:
        """The layer stack, teacher-forced: token embeddings x (B, T, D) → (B, T, D), before ``ln_f``.

        ``attend(y, i)``: layer i's cross-attention of its normalised input y (B, T, D) over the memory.
        ``rows``: x is one token sequence (B = 1) shared by ``rows`` memories; the first self-attention,
        which reads only the tokens, runs once and its output is broadcast to the ``rows`` rows."""
        for i, layer in enumerate(self.layers):
            x, _ = layer.attend_self(x)
            if i == 0 and rows is not None:
                x = x.expand(rows, -1, -1)
            x = layer.feed_forward(layer.attend_memory(x, attend, i))
        return x

    def forward(self, memory, tokens: torch.Tensor) -> torch.Tensor:
        x = self.run_layers(self.embed_tokens(tokens),
                            lambda y, i: self.layers[i].cross_attn(y, *memory[i]))   # (B, T, D)
        return self.head(self.ln_f(x))                               # (B, T, V)

    # incremental decoding -----------------------------------------------------
    def start(self, memory):
        return {"memory": memory, "cache": [(None, None)] * len(self.layers), "t": 0}

    def step(self, state, prev: torch.Tensor):
        x = self.embed_tokens(prev[:, None], offset=state["t"])       # (B, 1, D)
        new_cache = []
        for layer, mem_kv, cache in zip(self.layers, state["memory"], state["cache"]):
            x, cache = layer(x, mem_kv, cache)
            new_cache.append(cache)
        logp = F.log_softmax(self.head(self.ln_f(x[:, 0])), dim=-1)  # (B, V)
        return logp, {"memory": state["memory"], "cache": new_cache, "t": state["t"] + 1}

    def reorder(self, state, index: torch.Tensor):
        # Beam search only reorders rows within one image, whose memory rows are identical,
        # so the memory stays; only the per-beam self-attention cache moves.
        def pick(kv):
            return tuple(t.index_select(0, index) for t in kv)
        return {"memory": state["memory"],
                "cache": [pick(c) if c[0] is not None else c for c in state["cache"]],
                "t": state["t"]}

    def select(self, memory, index: torch.Tensor):
        """Rows of the per-image memory: (B, ...) → (len(index), ...) — beams, or captions of one image."""
        return [tuple(t.index_select(0, index) for t in kv) for kv in memory]


# ----------------------------------------------------------------------------- LSTM (Show, Attend and Tell)

class LSTMDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        d, h = cfg.d_model, cfg.hidden
        self.feat_norm = nn.LayerNorm(cfg.feat_dim)
        self.att_feat = nn.Linear(cfg.feat_dim, d)
        self.att_hidden = nn.Linear(h, d)
        self.att_score = nn.Linear(d, 1)
        self.init_h = nn.Linear(cfg.feat_dim, h)
        self.init_c = nn.Linear(cfg.feat_dim, h)
        self.f_beta = nn.Linear(h, cfg.feat_dim)          # gating scalar β (doubly-stochastic attention paper, §4.2.1)
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.cell = nn.LSTMCell(d + cfg.feat_dim, h)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(h, cfg.vocab_size)

    def encode_memory(self, grid: torch.Tensor):
        feats = self.feat_norm(grid)                      # (B, 49, C)
        return feats, self.att_feat(feats)                # (B, 49, C), (B, 49, d)

    def start(self, memory):
        feats, _ = memory
        mean = feats.mean(1)                              # (B, C)
        return {"memory": memory, "h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean))}

    def _cell(self, state, emb):
        feats, keys = state["memory"]
        e = self.att_score(torch.tanh(keys + self.att_hidden(state["h"])[:, None])).squeeze(-1)  # (B, 49)
        alpha = e.softmax(-1)
        ctx = (alpha[..., None] * feats).sum(1) * torch.sigmoid(self.f_beta(state["h"]))          # (B, C)
        h, c = self.cell(torch.cat([emb, ctx], -1), (state["h"], state["c"]))
        return self.head(self.drop(h)), {"memory": state["memory"], "h": h, "c": c}

    def forward(self, memory, tokens: torch.Tensor) -> torch.Tensor:
        state = self.start(memory)
        emb = self.drop(self.embed(tokens))               # (B, T, d)
        out = []
        for t in range(tokens.shape[1]):
            logits, state = self._cell(state, emb[:, t])
            out.append(logits)
        return torch.stack(out, 1)                        # (B, T, V)

    def step(self, state, prev: torch.Tensor):
        logits, state = self._cell(state, self.embed(prev))
        return F.log_softmax(logits, -1), state

    def reorder(self, state, index: torch.Tensor):
        # rows are only reordered within one image, whose memory rows are identical
        return {"memory": state["memory"],
                "h": state["h"].index_select(0, index), "c": state["c"].index_select(0, index)}

    def select(self, memory, index: torch.Tensor):
        return tuple(t.index_select(0, index) for t in memory)
