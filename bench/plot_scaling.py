#!/usr/bin/env python
"""Plot indexing time and query latency against library size from the benchmark JSON results.

Reads bench/results/query_latency.json (bench/query_latency.py) and
bench/results/index_throughput.json (bench/index_throughput.py) and writes bench/results/scaling.png:

  left   time to build a library of N photos: the synthetic store build (SQL insert of rows +
         FTS5 documents, measured), the FAISS and BM25-cache builds (measured), and the
         captioning time EXTRAPOLATED as N / (measured images/s of the indexing pipeline) — a
         straight line, not a measurement at those sizes;
  middle warm query latency p50 (and p95 as a dotted line) per mode;
  right  cold `imgsearch query` wall time and its peak RSS.

matplotlib is a bench-only dependency (pip install matplotlib).

    python bench/plot_scaling.py [--query-json ...] [--index-json ...] [--out bench/results/scaling.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--query-json", nargs="+", default=None,
                    help="query_latency JSON files (sizes are merged; default: results/query_latency*.json)")
    ap.add_argument("--index-json", default=str(RESULTS / "index_throughput.json"))
    ap.add_argument("--out", default=str(RESULTS / "scaling.png"))
    ap.add_argument("--rate", type=float, help="indexing images/s for the extrapolation (default: from --index-json)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = args.query_json or sorted(str(p) for p in RESULTS.glob("query_latency*.json"))
    by_size = {}
    q = {}
    for f in files:
        q = json.loads(Path(f).read_text())
        for r in q["sizes"]:
            by_size[r["size"]] = r  # later files win
    rows = [by_size[n] for n in sorted(by_size)]
    ns = [r["size"] for r in rows]
    rate = args.rate
    ip = Path(args.index_json)
    if rate is None and ip.is_file():
        ix = json.loads(ip.read_text())
        rate = (ix.get("summary") or {}).get("default_images_per_s")
        if rate is None and ix.get("pipeline"):
            rate = ix["pipeline"][0]["images_per_s"]

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax = axes[0]
    ax.plot(ns, [r["store_build_s"] for r in rows], "o-", label="synthetic store build (SQL rows + FTS5), measured")
    fb = [sum(r["faiss_build_s"].values()) if isinstance(r["faiss_build_s"], dict) else r["faiss_build_s"] for r in rows]
    ax.plot(ns, fb, "s-", label="FAISS build, both indexes: flat < 100-200k, IVF-SQ8 above (measured)")
    bc = [(r["size"], r["bm25_cache_build_s"]) for r in rows if r.get("bm25_cache_build_s")]
    if bc:
        ax.plot([a for a, _ in bc], [b for _, b in bc], "v-", label="BM25 score cache build (measured)")
    hn = [(r["size"], r["hnsw"]["build_caption_s"] + r["hnsw"]["build_image_s"]) for r in rows if "hnsw" in r]
    if hn:
        ax.plot([a for a, _ in hn], [b for _, b in hn], "^-", label="FAISS HNSW build, both indexes (measured)")
    if rate:
        xs = [min(ns), max(ns)]
        ax.plot(xs, [x / rate for x in xs], "k--",
                label=f"captioning, EXTRAPOLATED from measured {rate:.1f} img/s (12-MP, 2 cores)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("library size (photos)")
    ax.set_ylabel("seconds")
    ax.set_title("Indexing time vs library size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1]
    for mode, mk in (("bm25", "o"), ("dense", "s"), ("image", "D"), ("hybrid", "^")):
        p50 = [r["warm"][mode]["p50_ms"] for r in rows]
        p95 = [r["warm"][mode]["p95_ms"] for r in rows]
        line, = ax.plot(ns, p50, mk + "-", label=f"{mode} p50")
        ax.plot(ns, p95, mk + ":", color=line.get_color(), alpha=0.6)
    hh = [(r["size"], r["hnsw"]["warm"]["hybrid"]["p50_ms"]) for r in rows if "hnsw" in r]
    if hh:
        ax.plot([a for a, _ in hh], [b for _, b in hh], "*-", ms=10, label="hybrid p50 (HNSW ef 128)")
    ax.axhline(30, color="red", lw=0.8, ls="--", label="target at 1M: hybrid p50 30 ms")
    ax.axhline(100, color="red", lw=0.8, ls=":", label="target at 1M: hybrid p95 100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("library size (photos)")
    ax.set_ylabel("warm query latency, ms (solid p50, dotted p95)")
    ax.set_title("Warm Library.query latency (k=10)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[2]
    ax.plot(ns, [r["cold_cli"]["wall_s_median"] for r in rows], "o-", label="cold `imgsearch query` wall, s (median)")
    ax.axhline(2.5, color="red", lw=0.8, ls="--", label="target 2.5 s at 1M")
    ax.axhline(1.5, color="orange", lw=0.8, ls="--", label="target 1.5 s at 100k")
    ax.set_xscale("log")
    ax.set_xlabel("library size (photos)")
    ax.set_ylabel("seconds")
    ax2 = ax.twinx()
    ax2.plot(ns, [r["cold_cli"]["maxrss_mib_max"] / 1024 for r in rows], "s--", color="purple",
             label="peak RSS of that process, GiB")
    ax2.axhline(1.5e9 / 2**30, color="purple", lw=0.8, ls=":", label="target RSS 1.5 GB")
    ax2.set_ylabel("GiB")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.set_title("Cold CLI query (new process, warm page cache)")
    ax.grid(True, which="both", alpha=0.3)

    m = q.get("machine", {})
    fig.suptitle(f"imgsearch scaling — {m.get('cpu_model', '?')} x {m.get('cores', '?')} cores, "
                 f"{m.get('ram_gib', '?')} GiB RAM; synthetic libraries (see bench/README.md)", fontsize=11)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
