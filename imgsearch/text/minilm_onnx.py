"""all-MiniLM-L6-v2 on onnxruntime, without torch: the BERT graph is written with onnx.helper from the
NumPy weights (minilm.Weights, so the same numbers as the NumPy forward), cached once as

    <cache>/models/all-minilm-l6-v2-<weights sha256[:16]>-g<GRAPH_VERSION>.onnx  (+ .sha256, checked on load)

and loaded by onnxruntime straight from that file on every later start (onnx itself is only needed to
build it). Faster than the NumPy forward for single queries and for batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .minilm import MODEL_SHA256, Config, Weights

GRAPH_VERSION = 1


def build_onnx(W: Weights) -> bytes:
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
    # producer: the module that first built this graph, kept so the file stays byte-identical to older caches
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="imgsearch.text.embed", producer_version=str(GRAPH_VERSION))
    return model.SerializeToString()


def default_threads() -> int:
    """Intra-op threads for onnxruntime: half the CPUs, 1..4 (1 on a 2-core machine)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class OrtForward:
    """The embedding graph on onnxruntime: (ids, mask) (B, T) -> (B, hidden) float32, like Weights.forward."""

    def __init__(self, model: bytes | Path, threads: int):
        from imgsearch.artifacts import ort_session

        self.sess = ort_session(model, threads, log_severity=3)

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.sess.run(["embedding"], {"input_ids": ids.astype(np.int64, copy=False),
                                             "attention_mask": mask.astype(np.int64)})[0]


def onnx_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / "models" / f"all-minilm-l6-v2-{MODEL_SHA256[:16]}-g{GRAPH_VERSION}.onnx"


def onnx_model(model_dir: Path, cfg: Config, cache_dir: Path | None) -> bytes | Path:
    """Path of a verified cached ONNX file, or freshly built bytes (written to the cache when possible)."""
    from imgsearch.artifacts import load_or_build

    path = onnx_path(cache_dir) if cache_dir is not None else None
    return load_or_build(path, lambda: build_onnx(Weights(model_dir, cfg)))


def ort_forward(model_dir: Path, cfg: Config, cache_dir: Path | None, threads: int) -> OrtForward:
    """OrtForward over the cached graph; a cached file that does not load (damaged, though its sidecar
    matches) is built again from the weights (no torch needed), so a bad cache never stops a query or a run."""
    from imgsearch.artifacts import open_cached

    path = onnx_path(cache_dir) if cache_dir is not None else None
    return open_cached(path, lambda: build_onnx(Weights(model_dir, cfg)), lambda m: OrtForward(m, threads),
                       "MiniLM graph")
