#!/usr/bin/env python
"""Cheaper ways to put vectors into IVF cells, against FAISS's own (session 18; none kept).

An IVF-SQ8 add is almost all the assignment of each vector to its nearest cell (a matrix product with the
centroids, then an argmax), and the k-means of the cells is ten such assignments of the training sample. This
measures, on one thread as the early fill of an ingest runs (search/early_training.py):

  * FAISS: ``IndexFlatIP.search(x, 1)`` over the centroids, the k-means of ``IndexIVF.train`` (10 rounds,
    IVF_TRAIN_PER_LIST points a cell), the whole ``add_with_ids``;
  * torch, float32 and bfloat16 products (oneDNN; fast where the CPU has AVX512-BF16 or AMX), each step timed
    apart (product, reduction), then a whole assignment (bfloat16 product, top-4, exact float32 re-score), a
    spherical k-means built on it (FAISS's sampling and rounds, the cells handed to FAISS's quantizer so that
    ``train`` only fits the 8-bit codes) and an add with those assignments (``IndexIVF.add_core``);
  * an approximate assignment: an IVF over the centroids themselves (``--groups`` groups, 2-8 probed);

and what each costs in recall@10 at IVF_NPROBE cells searched, against exact search, on near-duplicate synthetic
vectors (--pool unit "captions", each copy perturbed by noise 0.015/dim: bench/ivf_cells.py's recipe without
MiniLM).

    python bench/cell_assign.py                 # 200k vectors, 2,048 cells: ~2 min
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RESULTS = HERE / "results"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def nearest_bf16(torch, x, cent, cent_bf16, top: int = 4, bs: int = 8192):
    """(n,) nearest centroid of each row of x: bfloat16 scores, the top ``top`` re-scored in float32."""
    out = torch.empty(len(x), dtype=torch.int64)
    for s in range(0, len(x), bs):
        xb = x[s:s + bs]                                              # (b, d)
        cand = (xb.to(torch.bfloat16) @ cent_bf16.T).topk(top, dim=1).indices   # (b, top)
        exact = torch.einsum("bd,btd->bt", xb, cent[cand])            # (b, top)
        out[s:s + bs] = cand.gather(1, exact.argmax(1, keepdim=True))[:, 0]
    return out


def kmeans_bf16(torch, x: np.ndarray, k: int, rounds: int, seed: int = 1234) -> np.ndarray:
    """Spherical k-means as FAISS's (random points to start, mean of each cell, renormalised; an empty cell
    keeps its centroid), its assignments by nearest_bf16."""
    xt = torch.from_numpy(x)
    c = xt[torch.from_numpy(np.random.default_rng(seed).permutation(len(x))[:k])].clone()
    for _ in range(rounds):
        a = nearest_bf16(torch, xt, c, c.to(torch.bfloat16))
        sums = torch.zeros_like(c).index_add_(0, a, xt)
        cnt = torch.bincount(a, minlength=k)
        c = torch.where(cnt[:, None] > 0, sums / cnt.clamp(min=1)[:, None].float(), c)
        c = torch.nn.functional.normalize(c, dim=1)
    return c.numpy()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--nlist", type=int, default=2048)
    ap.add_argument("--pool", type=int, default=12000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--groups", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--out", default=str(RESULTS / "cell_assign.txt"))
    args = ap.parse_args(argv)

    from imgsearch.search import faiss_lib
    from imgsearch.search.dense import IVF_KMEANS_ROUNDS, IVF_NPROBE, IVF_TRAIN_PER_LIST
    faiss = faiss_lib.load()
    import torch

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    def timed(label: str, fn, reps: int = 1):
        best = None
        for _ in range(reps):
            w, c = time.perf_counter(), _cpu()
            out = fn()
            got = (time.perf_counter() - w, _cpu() - c)
            best = got if best is None or got[0] < best[0] else best
        say(f"{label:58s} {best[0] * 1000:9.1f} ms wall {best[1] * 1000:9.1f} ms CPU")
        return out

    n, d, k = args.size, 384, args.nlist
    rng = np.random.default_rng(0)
    pool = _unit(rng.normal(size=(args.pool, d)))
    x = _unit(pool[rng.integers(0, len(pool), n)] + rng.normal(0, 0.015, (n, d)))
    sample = x[rng.choice(n, k * IVF_TRAIN_PER_LIST, replace=False)]
    queries = _unit(pool[rng.integers(0, len(pool), args.queries)] + rng.normal(0, 0.03, (args.queries, d)))
    ids = np.arange(n, dtype=np.int64)
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    _, truth = flat.search(queries, 10)
    del flat
    say(f"# bench/cell_assign.py: {n:,} vectors, {k:,} cells, one thread; torch {torch.__version__} (CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), FAISS {faiss.__version__}; CPU flags: "
        + " ".join(sorted(f for f in faiss_lib.cpu_flags() if "bf16" in f or f.startswith("amx"))))

    def new_index():
        idx = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, k, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
        idx.cp.niter, idx.cp.max_points_per_centroid = IVF_KMEANS_ROUNDS, IVF_TRAIN_PER_LIST
        return idx

    def recall(idx) -> float:
        idx.nprobe = IVF_NPROBE
        _, got = idx.search(queries, 10)
        return float(np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, got)]))

    # FAISS as the library uses it
    ref = new_index()
    timed(f"FAISS k-means ({len(sample):,} points, {IVF_KMEANS_ROUNDS} rounds) + SQ8 fit", lambda: ref.train(sample))
    cent = ref.quantizer.reconstruct_n(0, k)
    _, exact = timed(f"FAISS nearest cell of {n:,}", lambda: ref.quantizer.search(x, 4))
    timed(f"FAISS add_with_ids of {n:,}", lambda: ref.add_with_ids(x, ids))
    say(f"  recall@10 (nprobe {IVF_NPROBE}): {recall(ref):.4f}")

    # torch's steps, one 8,192-row block
    xb, ct = torch.from_numpy(x[:8192]), torch.from_numpy(cent)
    cb = ct.to(torch.bfloat16)
    timed(f"torch float32 product, 8,192 x {k:,}", lambda: xb @ ct.T, 5)
    xbb = xb.to(torch.bfloat16)
    scores = timed(f"torch bfloat16 product, 8,192 x {k:,}", lambda: xbb @ cb.T, 5)
    timed("  argmax of the bfloat16 scores", lambda: scores.argmax(1), 5)
    timed("  float32 conversion + max", lambda: scores.float().max(1), 5)
    cand = timed("  top-4", lambda: scores.topk(4, dim=1).indices, 5)
    timed("  exact float32 re-score of the 4", lambda: torch.einsum("bd,btd->bt", xb, ct[cand]), 5)
    timed("torch bfloat16 whole assignment, 8,192", lambda: nearest_bf16(torch, xb, ct, cb), 5)
    timed("FAISS whole assignment, 8,192", lambda: ref.quantizer.search(x[:8192], 1), 5)
    mine = nearest_bf16(torch, torch.from_numpy(x), ct, cb).numpy()
    say(f"  bfloat16 assignments equal to FAISS's: {(mine == exact[:, 0]).mean():.4f}")

    # a k-means and a fill built on it
    alt = new_index()
    cent2 = timed("torch bfloat16 spherical k-means, same sample and rounds", lambda: kmeans_bf16(
        torch, sample, k, IVF_KMEANS_ROUNDS))
    alt.quantizer.add(cent2)
    timed("  FAISS train with those cells (SQ8 fit only)", lambda: alt.train(sample))
    c2, c2b = torch.from_numpy(cent2), torch.from_numpy(cent2).to(torch.bfloat16)

    def add_core():
        for s in range(0, n, 32768):
            xs, ii = np.ascontiguousarray(x[s:s + 32768]), ids[s:s + 32768]
            a = np.ascontiguousarray(nearest_bf16(torch, torch.from_numpy(xs), c2, c2b).numpy())
            alt.add_core(len(xs), faiss.swig_ptr(xs), faiss.swig_ptr(ii), faiss.swig_ptr(a))
    timed(f"add of {n:,} with bfloat16 assignments (add_core)", add_core)

    def objective(c):
        q = faiss.IndexFlatIP(d)
        q.add(c)
        return float(q.search(sample, 1)[0].mean())
    say(f"  k-means objective (mean best inner product): FAISS {objective(cent):.4f}, bfloat16 {objective(cent2):.4f}; "
        f"recall@10 {recall(alt):.4f}")

    # approximate assignment: an IVF over the centroids
    for groups in args.groups:
        q2 = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, groups, faiss.METRIC_INNER_PRODUCT)
        q2.cp.min_points_per_centroid = 1
        q2.train(cent)
        q2.add(cent)
        for probe in (2, 4, 8):
            q2.nprobe = probe
            _, ap2 = timed(f"approximate: IVF{groups} over the cells, {probe} probed, {n:,}", lambda: q2.search(x, 1))
            a = np.ascontiguousarray(ap2[:, 0].astype(np.int64))
            idx = new_index()
            idx.quantizer.add(cent)
            idx.train(sample)
            idx.add_core(n, faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(a))
            say(f"  in the nearest cell {(a == exact[:, 0]).mean():.3f}; recall@10 {recall(idx):.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
