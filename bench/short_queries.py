#!/usr/bin/env python
"""mAP and P@5 of every search mode for SHORT queries ("pizza", "umbrella", "black dog") on a captioned dev set.

Users type one or two words more often than sentences. From a COCO-style caption file this builds three
query sets (bench/shortq.py has the rules): one-word queries (the captions' nouns), two-word queries
(frequent noun pairs and adjective+noun pairs) and ImageNet class names that occur in the captions. A photo
is relevant to a query when at least 2 of its 5 human captions name it (imgsearch's normalised terms).
Every query runs through Library.query(q, k=K, mode=..., rerank=...) for each mode the library has
(imgsearch.search.settings.MODES at run time; hybrid also with rerank=False), and each mode gets
mAP (average precision over the K results; relevant photos not returned count as misses) and P@5, per
query set. Then the hybrid mode's worst queries.

    python bench/short_queries.py --captions ../shared/data/flickr8k/captions_dev.json \\
        --images ../shared/data/flickr8k/images --library /tmp/sq/flickr/library.db --index \\
        --json bench/results/short_queries_flickr8k_dev.json --write-queries /tmp/sq/flickr/queries.json

--index indexes the caption file's photos (those of --images that it names) into --library when the library
does not exist yet. --first-words N also runs the earlier measure of this script: R@1/5/10 of hybrid with
and without re-ranking when each dev caption, cut to its first N content words, has to find its own photo.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import shortq  # noqa: E402


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "imgsearch"], cwd=HERE.parent,
                               capture_output=True, text=True).stdout.strip()
        rev += f" ({len(dirty.splitlines())} uncommitted change(s) under imgsearch/)" if dirty else " (clean)"
    except OSError:
        rev = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {platform.platform()}, CPU {cpu!r} x {os.cpu_count()}, load {load}; "
            f"Python {platform.python_version()}; checkout {rev}")


def ensure_library(args, paths: list[str]) -> None:
    from imgsearch import Library

    if Path(args.library).exists():
        if args.index:
            print(f"library {args.library} exists: not re-indexed")
        return
    if not args.index:
        raise SystemExit(f"no library at {args.library}: pass --index to index the caption file's photos into it")
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise SystemExit(f"{len(missing)} photos of the caption file are not under --images, e.g. {missing[0]}")
    Path(args.library).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with Library(args.library) as lib:
        report = lib.index(paths, progress=None)
    print(f"indexed {len(paths)} photos into {args.library} in {time.time() - t0:.1f} s: added {report.added}, "
          f"failed {report.failed}")


def library_paths(lib) -> set[str] | None:
    """Paths of the library's searchable photos (None where the store's layout is not the expected one)."""
    try:
        from sqlalchemy import select

        from imgsearch.store.models import Photo

        with lib.store.session() as s:
            return {p for (p,) in s.execute(select(Photo.path).where(Photo.error.is_(None)))}
    except Exception:                                   # an internal layout changed: skip the check
        return None


def print_table(result: dict, sets: list[str]) -> None:
    labels = result["modes"]
    w = max(len(lab) for lab in labels) + 2
    print(f"\n{'mAP / P@5':{w}s}" + "".join(f"{shortq.KIND_NAMES.get(s, s):>22s}" for s in sets))
    ns = [result["summary"][s][labels[0]]["n"] for s in sets]
    print(f"{'(queries)':{w}s}" + "".join(f"{n:>22d}" for n in ns))
    for lab in labels:
        cells = [result["summary"][s][lab] for s in sets]
        print(f"{lab:{w}s}" + "".join(f"{c['mAP']:>13.3f} / {c['P@5']:.3f}" for c in cells))


SET_SHORT = {"noun": "one", "noun+noun": "two:n+n", "adj+noun": "two:a+n", "class": "class"}


def print_worst(result: dict, n: int, mode: str = "hybrid") -> None:
    if mode not in result["modes"] or n <= 0:
        return
    others = [lab for lab in result["modes"] if lab != mode]
    rows = sorted(result["per_query"], key=lambda r: (r["ap"][mode], r["p5"][mode], -r["n_relevant"], r["query"]))[:n]
    abbrev = {"hybrid --no-rerank": "no-rr"}
    print(f"\nworst {len(rows)} queries for {mode} (AP; P@5 for {mode}; AP of the other modes; the first hit)")
    head = f"{'query':22s} {'set':9s} {'rel':>4s} {'AP':>6s} {'P@5':>5s}" + "".join(
        f" {abbrev.get(lab, lab)[:6]:>6s}" for lab in others)
    print(head + "  first hit")
    for r in rows:
        top = r.get("top") or []
        first = (("+ " if top[0][1] else "- ") + (top[0][2] or "")[:60]) if top else ""
        kind = SET_SHORT.get(r["sub"], r["kind"])
        print(f"{r['query'][:22]:22s} {kind:9s} {r['n_relevant']:4d} {r['ap'][mode]:6.3f} "
              f"{r['p5'][mode]:5.2f}" + "".join(f" {r['ap'][lab]:6.3f}" for lab in others) + f"  {first}")


def first_words(args, lib, paths: list[str], captions: list[list[str]]) -> dict:
    """The earlier measure: each caption's first N content words must find its own photo (R@1/5/10)."""
    from imgsearch.text.normalize import STOPWORDS, tokenize

    ranks: dict[bool, list[int]] = {True: [], False: []}
    t0 = time.time()
    for path, caps in zip(paths, captions):
        for c in caps:
            words = [w for w in tokenize(c) if w not in STOPWORDS][:args.first_words]
            q = " ".join(words) if words else c
            for rerank in (False, True):
                hits = lib.query(q, k=10, rerank=rerank)
                ranks[rerank].append(next((h.rank for h in hits if h.path == path), 11))
    out = {}
    print(f"\nfirst {args.first_words} content words of each caption: {len(ranks[True])} queries "
          f"({time.time() - t0:.0f} s), its own photo in the top K")
    for rerank in (False, True):
        r = ranks[rerank]
        rec = {f"R@{k}": sum(x <= k for x in r) / len(r) for k in (1, 5, 10)}
        out["hybrid" if rerank else "hybrid --no-rerank"] = rec
        print(f"hybrid{'' if rerank else ' --no-rerank'}: " + "  ".join(f"{k} {v:.3f}" for k, v in rec.items()))
    return out


def _rounded(x, digits: int = 4):
    if isinstance(x, float):
        return round(x, digits)
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v, digits) for v in x]
    return x


def _dump(out: dict) -> str:
    """JSON, indented, with one line per query."""
    rows = out.pop("per_query")
    head = json.dumps(out, indent=1)
    return (head[:-2] + ',\n "per_query": [\n' + ",\n".join("  " + json.dumps(r) for r in rows) + "\n ]\n}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True, help="COCO-style caption JSON")
    ap.add_argument("--images", required=True, help="folder with its images")
    ap.add_argument("--library", help="a library holding those photos (needed except with --show-vocab)")
    ap.add_argument("--index", action="store_true", help="index the caption file's photos into --library first "
                                                         "if it does not exist")
    ap.add_argument("-k", "--k", type=int, default=100,
                    help="results per query (default 100; at most the number of photos)")
    ap.add_argument("--modes", nargs="+", default=None,
                    help="mode labels (default: every mode in imgsearch.search.settings.MODES, plus "
                         "'hybrid --no-rerank')")
    ap.add_argument("--queries", default=None, help="load the query sets from this JSON instead of building them")
    ap.add_argument("--write-queries", default=None, metavar="PATH", help="write the query sets as JSON")
    ap.add_argument("--max-share", type=float, default=0.30, help="drop queries relevant to more of the photos")
    ap.add_argument("--max-pairs", type=int, default=150, help="two-word queries per kind (noun+noun, adj+noun)")
    ap.add_argument("--worst", type=int, default=15, help="show the N worst queries of hybrid")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the summary and per-query scores as JSON")
    ap.add_argument("--first-words", type=int, default=0, metavar="N",
                    help="also run the earlier measure (R@K of each caption's first N content words)")
    ap.add_argument("--show-vocab", action="store_true",
                    help="print the caption words taken as nouns (the one-word query candidates), then stop")
    args = ap.parse_args()

    from imgsearch import Library
    from imgsearch.search.settings import FUSION, MODES, RERANK

    if args.show_vocab:
        nouns = shortq.noun_words(args.captions, args.images)
        print(f"{len(nouns)} words taken as nouns that name >= 2 photos (check them against "
              f"{shortq.STOPLIST.relative_to(HERE.parent)}):\n" + ", ".join(sorted(nouns.values())))
        return
    if not args.library:
        ap.error("--library is required")
    print(machine())
    print(f"settings: MODES {MODES}; FUSION {json.dumps(FUSION)}; RERANK {json.dumps(RERANK)}")
    paths, captions = shortq.load_photos(args.captions, args.images)
    t0 = time.time()
    if args.queries:
        queries = shortq.load_queries(args.queries)
        print(f"{len(queries)} queries from {args.queries}")
    else:
        queries = shortq.build_queries(args.captions, args.images, max_share=args.max_share,
                                       max_pairs=args.max_pairs)
        print(f"{len(queries)} queries built from {args.captions} ({len(paths)} photos) in {time.time() - t0:.1f} s"
              f"; relevant = >= 2 of a photo's captions name it; kept: >= 2 and <= {args.max_share:.0%} of the photos")
    counts = {}
    for q in queries:
        counts[(q["kind"], q["sub"])] = counts.get((q["kind"], q["sub"]), 0) + 1
    print("query sets: " + ", ".join(f"{shortq.KIND_NAMES.get(k, k)}{'' if s in ('noun', 'class') else f' ({s})'} "
                                     f"{n}" for (k, s), n in counts.items()))
    if args.write_queries:
        shortq.write_queries(args.write_queries, queries, captions=str(Path(args.captions).resolve()),
                             images=str(Path(args.images).resolve()), n_photos=len(paths),
                             max_share=args.max_share, max_pairs=args.max_pairs,
                             stoplist=str(shortq.STOPLIST.relative_to(HERE.parent)))
        print(f"wrote {args.write_queries}")

    ensure_library(args, paths)
    with Library(args.library, create=False) as lib:
        n_lib = lib.status()["photos"]
        k = max(1, min(args.k, n_lib))
        known = set(paths)
        relevant = {p for q in queries for p in q["relevant"]}
        print(f"library {args.library}: {n_lib} photos ({len(known)} in the caption file); k = {k}; "
              f"{sum(q['n_relevant'] > k for q in queries)} queries have more than k relevant photos")
        if n_lib < len(known):
            print("warning: the library holds fewer photos than the caption file names")
        # warm up: models, scorer, caches (not timed)
        for lab, mode, rr in shortq.library_modes():
            try:
                lib.query("dog", k=k, mode=mode, rerank=rr)
            except Exception:                         # reported by evaluate if it persists
                pass
        stored = library_paths(lib)
        if stored is not None and relevant - stored:
            print(f"warning: {len(relevant - stored)} relevant photos are not searchable in the library "
                  f"(they count as misses)")
        result = shortq.evaluate(lib, queries, args.modes, k)
        fw = first_words(args, lib, paths, captions) if args.first_words else None
    for lab, why in result["skipped"].items():
        print(f"mode {lab!r} skipped: {why}")
    print("queries with no result: " + ", ".join(f"{lab} {n}" for lab, n in result["no_results"].items()))
    print("seconds per mode (all queries): " + ", ".join(f"{lab} {s:.1f}" for lab, s in result["seconds"].items()))
    sets = [s for s in ("one", "two", "class", "all") if s in result["summary"]]
    print_table(result, sets)
    subs = [s for s in ("two:noun+noun", "two:adj+noun") if s in result["summary"]]
    if subs:
        print_table(result, subs)
    print_worst(result, args.worst)
    if args.json:
        out = {"machine": machine(), "captions": str(args.captions), "images": str(args.images),
               "library": str(args.library), "n_photos": len(paths), "n_library": n_lib,
               "settings": {"MODES": list(MODES), "FUSION": FUSION, "RERANK": RERANK},
               "query_sets": {f"{k}:{s}": n for (k, s), n in counts.items()}, **result}
        if fw is not None:
            out["first_words"] = {"words": args.first_words, **fw}
        for row in out["per_query"]:                   # file names, not this machine's paths
            row["top"] = [[Path(p).name, rel, cap] for p, rel, cap in row.get("top", [])]
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(_dump(_rounded(out)), "utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
