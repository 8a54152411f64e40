#!/usr/bin/env python
"""Would a trained word-concept detector lift SHORT queries? (issue 12's Flickr8k short-query target; an
experiment, not shipped — bench/README.md says why.)

A multi-label head is trained on Flickr8k train to say, per photo, which of the train captions' short queries
apply (the same rules as the dev measure, bench/shortq.py, applied to the TRAIN captions: a noun, a noun pair or
an adjective + noun, an ImageNet class name; positive when >= 2 of the photo's 5 captions name it). Its input is
what a library already stores per photo, the re-ranking cells (49 x 256 int8, model/rerank.py), so an existing
library could get it without re-encoding:

    cells (B, 49, 256) -> standardise -> [mean, max] over cells (B, 512) -> MLP 512-2048-Q + linear skip -> (B, Q)
    trained with binary cross-entropy, Q = 2,454 train queries, one-cycle AdamW, mirrored grids

Then, per dev set, every short query runs through the library's own per-signal lists, fusion and re-ranker
(``QueryEngine.ranked_lists``, ``fuse_lists``, ``QueryEngine.rerank``: the shipped hybrid without the relevance
cut) with and without a fifth list: the photos ranked by the summed probability of the head's concepts whose
terms the query contains (concepts with at least ``--min-positives`` train photos), at fusion weight W.
mAP over the top 100, on all queries and on two halves (even / odd query numbers).

    python bench/concept_head.py --work /tmp/concepts \\
        --set flickr8k:/tmp/dev/f/library.db:/tmp/dev/f_q.json --set coco:/tmp/dev/c/library.db:/tmp/dev/c_q.json

(libraries and query sets as bench/short_queries.py makes them: ``--index --write-queries``). ~6 min here.
"""
from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import shortq  # noqa: E402

FLICKR = HERE.parent.parent / "shared" / "data" / "flickr8k"


def train_cells(work: Path, captions: Path, images: Path):
    """(N, 49, 256) float32 cells of the training photos, as a library would store them (int8 round trip)."""
    import torch

    from imgsearch.model.captioner import Captioner
    from imgsearch.model.coco import load_captions
    from imgsearch.model.encoder import load_encoder
    from imgsearch.model.features import feature_cache
    from imgsearch.model.rerank import cells_from_grid, pack_cells, unpack_cells

    out = work / "train_cells.npy"
    refs = load_captions(captions)
    if out.exists():
        return np.load(out).astype(np.float32), refs
    with torch.inference_mode():
        grid, _ = feature_cache(load_encoder("lite0").eval(), images, refs.file_names, work / "features_train")
    cap = Captioner.load(device="cpu")
    cells = np.concatenate([unpack_cells(pack_cells(cells_from_grid(cap, torch.from_numpy(
        np.asarray(grid[s:s + 500], np.float32))))) for s in range(0, len(grid), 500)])
    np.save(out, cells.astype(np.float16))
    return cells, refs


class ConceptHead:
    """The head (torch module inside), its standardisation and its concept table."""

    def __init__(self, concepts: list[dict], cells: np.ndarray, hidden: int):
        import torch
        from torch import nn

        sample = torch.from_numpy(cells[:2000])
        self.mean, self.std = sample.mean((0, 1)), sample.std((0, 1)).clamp_min(1e-3)
        d, q = 2 * cells.shape[-1], len(concepts)
        self.drop = nn.Dropout(0.3)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(0.5), nn.Linear(hidden, q))
        self.skip = nn.Linear(d, q)
        self.params = list(self.mlp.parameters()) + list(self.skip.parameters())
        self.concepts = concepts

    def logits(self, cells, train: bool = False):
        import torch

        for m in (self.drop, self.mlp):
            m.train(train)
        x = (cells - self.mean) / self.std                                   # (B, 49, 256)
        h = self.drop(torch.cat([x.mean(1), x.amax(1)], -1))                 # (B, 512)
        return self.mlp(h) + self.skip(h)                                    # (B, Q)

    def fit(self, cells: np.ndarray, labels: np.ndarray, epochs: int, lr: float, log) -> None:
        import torch
        import torch.nn.functional as F

        torch.manual_seed(0)
        x_all, y_all = torch.from_numpy(cells), torch.from_numpy(labels)
        n, bs = len(x_all), 256
        opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(n / bs),
                                                    pct_start=0.1)
        for epoch in range(epochs):
            order, total = torch.randperm(n), 0.0
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                x = x_all[idx]
                flip = torch.rand(len(idx)) < 0.5                            # a mirrored photo's grid
                x = torch.where(flip[:, None, None], x.view(len(idx), 7, 7, -1).flip(2).reshape(x.shape), x)
                loss = F.binary_cross_entropy_with_logits(self.logits(x, train=True), y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
                log(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.4f}")

    def probs(self, cells: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.logits(torch.from_numpy(cells))).numpy()   # (N, Q)


def evaluate(head: ConceptHead, library: str, queries: list[dict], weights: list[float], min_pos: int) -> dict:
    """mAP (top 100) of the shipped hybrid with a concept list fused at each weight (0: the shipped hybrid)."""
    from imgsearch import Library
    from imgsearch.model.rerank import unpack_cells
    from imgsearch.search.fuse import fuse_lists
    from imgsearch.search.settings import FUSION, rerank_weight
    from imgsearch.text.normalize import search_terms

    con = sqlite3.connect(library)
    rows = con.execute("SELECT photo_id, data FROM photo_cells ORDER BY photo_id").fetchall()
    path_of = dict(con.execute("SELECT id, path FROM photos"))
    con.close()
    ids = np.array([i for i, _ in rows])
    p = head.probs(unpack_cells([d for _, d in rows]))
    terms = [frozenset(c["terms"]) for c in head.concepts]
    usable = [len(c["rel"]) >= min_pos for c in head.concepts]
    lib = Library(library)
    eng = lib.engine
    aps = {w: [] for w in weights}
    alone = []
    try:
        for q in queries:
            text = q["query"]
            words = frozenset(search_terms(text))
            hit = [c for c, t in enumerate(terms) if usable[c] and t and t <= words]
            concept = []
            if hit:
                s = p[:, hit].sum(1)
                top = np.argsort(-s, kind="stable")[:100]
                concept = [(int(ids[i]), float(s[i])) for i in top]
                alone.append(shortq.average_precision([path_of[i] for i, _ in concept], q["relevant"]))
            qvec = lib.models.embedder().embed([text])[0]
            base_w = eng.signal_weights(text, qvec, "hybrid")
            lists = eng.ranked_lists(text, qvec, "hybrid", int(FUSION["depth"]), weights=base_w)
            rw = rerank_weight(text, base_w.get("labels", 0.0))
            for w in weights:
                lw, ww = dict(lists), dict(base_w)
                if concept and w > 0:
                    lw["concepts"], ww["concepts"] = concept, w
                fused = fuse_lists(lw, ww)
                fused = eng.rerank(text, fused, rw) if rw > 0 else fused
                aps[w].append(shortq.average_precision([path_of[i] for i, _ in fused[:100]], q["relevant"]))
    finally:
        lib.close()
    out = {"queries": len(queries), "with_a_concept": len(alone), "concepts_alone_mAP": float(np.mean(alone)) if alone else None}
    for w, a in aps.items():
        out[f"W={w:g}"] = {"mAP": float(np.mean(a)), "halves": [float(np.mean(a[0::2])), float(np.mean(a[1::2]))]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", action="append", required=True, metavar="NAME:LIBRARY:QUERIES_JSON")
    ap.add_argument("--captions", default=str(FLICKR / "captions_train.json"))
    ap.add_argument("--images", default=str(FLICKR / "images"))
    ap.add_argument("--work", default="/tmp/concept_head")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--weights", default="0,1,2,3,4")
    ap.add_argument("--min-positives", default="0,20,30", help="comma-separated: concepts with fewer train photos are not used")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.time()
    cells, refs = train_cells(work, Path(args.captions), Path(args.images))
    concepts = shortq._build([str(i) for i in range(len(refs.file_names))], refs.captions, min_relevant=2,
                             max_share=0.30, min_captions=2, max_pairs=900, stoplist=shortq.load_stoplist())
    concepts = [{"query": c["query"], "terms": c["terms"], "rel": [int(i) for i in c["relevant"]]} for c in concepts]
    labels = np.zeros((len(cells), len(concepts)), np.float32)
    for j, c in enumerate(concepts):
        labels[c["rel"], j] = 1
    log(f"{len(cells)} training photos, {len(concepts)} concepts from their captions ({time.time() - t0:.0f} s)")
    head = ConceptHead(concepts, cells, args.hidden)
    head.fit(cells, labels, args.epochs, args.lr, log)
    results = {"epochs": args.epochs, "lr": args.lr, "hidden": args.hidden, "concepts": len(concepts), "sets": {}}
    weights = [float(w) for w in args.weights.split(",")]
    for spec in args.set:
        name, library, qpath = spec.split(":", 2)
        qs = shortq.load_queries(qpath)
        for mp in (int(x) for x in args.min_positives.split(",")):
            r = evaluate(head, library, qs, weights, mp)
            results["sets"][f"{name} min_positives={mp}"] = r
            line = " | ".join(f"{k} {v['mAP']:.3f} ({v['halves'][0]:.3f}/{v['halves'][1]:.3f})"
                              for k, v in r.items() if k.startswith("W="))
            log(f"{name}, concepts with >= {mp} train photos: {r['with_a_concept']}/{r['queries']} queries have one, "
                f"concepts alone mAP {r['concepts_alone_mAP'] or 0:.3f}; hybrid mAP (halves) {line}")
    log(f"total {time.time() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
