#!/usr/bin/env python3
"""Generate ``imgsearch/model/data/imagenet_tags.json`` from WordNet 3.0.

The output is a JSON list of 1000 entries in ImageNet-1k class-index order
(the standard torchvision/Keras order, n01440764 tench ... n15075141 toilet
tissue)::

    {"wnid": "n02099601", "name": "golden retriever",
     "hypernyms": ["retriever", "sporting dog", "hunting dog", "dog", ...]}

Inputs (nothing is downloaded by this script):

* WordNet 3.0 ``data.noun`` -- Debian/Ubuntu package ``wordnet-base``
  (``apt-get install wordnet-base`` → ``/usr/share/wordnet/data.noun``).
  ImageNet wnids are ``"n" + <8-digit WordNet 3.0 noun offset>``.
* The 1000 wnids in class order, from one of (first that works):
    - ``--synsets PATH``: a text file with one wnid per line, or a timm wheel
      (``pip download --no-deps timm``), read as a zip:
      ``timm/data/_info/imagenet_synsets.txt``;
    - the wnids already in the existing output file (so the table can be
      regenerated from the committed JSON alone, e.g. after editing the
      stoplist below).

Names: the first lemma of the synset with underscores replaced by spaces
(identical to torchvision's ``_IMAGENET_CATEGORIES`` except that torchvision
renames the two duplicate names; here duplicates "crane" (bird / machine) are
kept and the second "maillot" uses its second lemma, "tank suit").

Hypernyms: walk the *first* hypernym path (first ``@``/``@i`` pointer of each
synset) up to the root, drop the abstract/technical words in ``STOP``, keep
the ``NEAREST`` closest remaining ancestors plus any ``CORE`` everyday word
further up (or on any other hypernym path), rename via ``RENAME``, dedupe, cap
at ``MAX_HYPERNYMS``.

Usage::

    python tools/make_imagenet_tags.py --synsets timm-1.0.31-py3-none-any.whl
    python tools/make_imagenet_tags.py            # reuse wnids of existing JSON
    python tools/make_imagenet_tags.py --print    # also dump a readable table
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "imgsearch" / "model" / "data" / "imagenet_tags.json"
DEFAULT_WORDNET = Path("/usr/share/wordnet/data.noun")
TIMM_MEMBER = "timm/data/_info/imagenet_synsets.txt"

NEAREST = 4          # closest non-stop ancestors always kept
MAX_HYPERNYMS = 7    # hard cap per class

# Ancestors (first lemma, spaces) never emitted: too abstract, too technical
# (taxonomic ranks nobody searches for) or misleading out of context.
STOP = frozenset("""
entity|physical entity|object|whole|abstraction|artifact|instrumentality|organism|living thing
causal agent|matter|substance|solid|vertebrate|chordate|placental|device|container|structure
covering|commodity|consumer goods|durables|equipment|conveyance|self-propelled vehicle
wheeled vehicle|implement|produce|nutriment|foodstuff|ingredient|flavorer|natural object
plant part|plant organ|reproductive structure|geological formation|natural elevation
aquatic vertebrate|invertebrate|arthropod|diapsid|anapsid|saurian|oscine|passerine|elasmobranch
cartilaginous fish|teleost fish|bony fish|soft-finned fish|spiny-finned fish|cypriniform fish
cyprinid|chelonian|phasianid|anseriform bird|metatherian|coelenterate|leporid|lagomorph|bovid
ruminant|ungulate|even-toed ungulate|odd-toed ungulate|colubrid snake|decapod crustacean
lepidopterous insect|musteline mammal|pinniped mammal|angiosperm|spermatophyte|vascular plant
mechanism|mechanical device|protective covering|furnishing|instrument|measuring instrument
establishment|mercantile establishment|place of business|location|point|geographic point
region|area|attribute|shape|round shape|system|article|ware|piece|part|material|obstruction
restraint|support|supporting structure|creation|unit|group|collection|way|surface|sheet
layer|line|facility|white goods|game equipment|sports equipment
merchandise|product|psychological feature|event|act|activity|relation|communication
measure|quantity|component|constituent|element|natural depression|ridge|concoction
piece of cloth|cloth covering|overgarment|outerwear|neckwear|hosiery|craft
anthropoid|hominid|eutherian|gastropod|basidiomycete|echinoderm|salientian|archosaur
heavier-than-air craft|lighter-than-air craft|feed|course|nutrient|dainty|baked goods
game|associate|peer|press|medium|prototherian|acarine|scorpaenoid|plectognath
vessel|communication system|telecommunication system
""""".replace("\n", "|").split("|")) - {""}

# Specific synsets never emitted although their lemma is fine elsewhere:
# 13899404 "ball" = round shape (bubble → globule → ball) vs. the game ball.
STOP_SYNSETS = frozenset({"13899404"})

# Everyday words kept wherever they occur on any hypernym path.
CORE = frozenset("""
animal|mammal|bird|fish|dog|cat|insect|reptile|snake|spider|butterfly|monkey|ape|bear|wolf|fox
shark|turtle|frog|crab|beetle|horse|cattle|sheep|pig|swine|deer|rabbit|duck|parrot|owl|eagle
vehicle|car|truck|bus|train|boat|ship|aircraft|bicycle|motorcycle
food|fruit|edible fruit|vegetable|dish|dessert|bread|beverage|drink|alcohol|coffee|sauce
plant|flower|tree|fungus|mushroom
musical instrument|clothing|garment|furniture|building|tool|weapon|toy|computer|shop|house
""".replace("\n", "|").split("|")) - {""}

# Emit a friendlier word (or several) instead of the WordNet first lemma.
RENAME = {
    "beverage": ["drink"],
    "edible fruit": ["fruit"],
    "musical instrument": ["musical instrument", "instrument"],
}

# Readable class names that differ from the first lemma (duplicates).
NAME_OVERRIDES = {"n03710721": "tank suit"}


def lemma(word: str) -> str:
    """WordNet lemma as stored in data.noun → readable string."""
    w = word.replace("_", " ")
    # adjective markers like "(a)" / "(p)" only occur in data.adj, but be safe
    if w.endswith(")") and "(" in w:
        w = w[: w.rindex("(")]
    return w.strip()


def read_data_noun(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """offset → (lemmas, hypernym offsets) from a WordNet ``data.noun`` file."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset = fields[0]
            w_cnt = int(fields[3], 16)
            words = [fields[4 + 2 * i] for i in range(w_cnt)]
            i = 4 + 2 * w_cnt
            p_cnt = int(fields[i])
            i += 1
            hyper = []
            for _ in range(p_cnt):
                symbol, target, pos, _srctgt = fields[i : i + 4]
                i += 4
                if symbol in ("@", "@i") and pos == "n":
                    hyper.append(target)
            synsets[offset] = ([lemma(w) for w in words], hyper)
    return synsets


def read_wnids(synsets_arg: str | None, out: Path) -> list[str]:
    if synsets_arg:
        p = Path(synsets_arg)
        if p.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(p) as z:
                text = z.read(TIMM_MEMBER).decode()
        else:
            text = p.read_text()
        wnids = [ln.strip() for ln in text.splitlines() if ln.strip()]
    elif out.exists():
        wnids = [e["wnid"] for e in json.loads(out.read_text())]
    else:
        sys.exit("need --synsets (imagenet_synsets.txt or a timm wheel): no existing table to reuse")
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        sys.exit(f"expected 1000 distinct wnids, got {len(wnids)} ({len(set(wnids))} distinct)")
    if wnids[0] != "n01440764" or wnids[-1] != "n15075141":
        sys.exit("wnids are not in the standard ImageNet-1k class order")
    return wnids


def first_path(offset: str, synsets) -> list[str]:
    """Ancestor offsets along the first hypernym pointer, nearest first."""
    chain, cur, seen = [], offset, {offset}
    while synsets[cur][1]:
        cur = synsets[cur][1][0]
        if cur in seen:  # defensive; WordNet noun hierarchy is acyclic
            break
        seen.add(cur)
        chain.append(cur)
    return chain


def all_ancestors(offset: str, synsets) -> list[str]:
    """Every ancestor offset on any hypernym path (BFS order)."""
    out, queue, seen = [], list(synsets[offset][1]), {offset}
    while queue:
        cur = queue.pop(0)
        if cur in seen:
            continue
        seen.add(cur)
        out.append(cur)
        queue.extend(synsets[cur][1])
    return out


def hypernym_terms(offset: str, synsets) -> list[str]:
    words = [synsets[o][0][0] for o in first_path(offset, synsets) if o not in STOP_SYNSETS]
    kept = [w for w in words if w not in STOP]
    chosen = kept[:NEAREST] + [w for w in kept[NEAREST:] if w in CORE]
    # CORE words that only appear on a secondary hypernym path
    first = set(words)
    for o in all_ancestors(offset, synsets):
        if o in STOP_SYNSETS:
            continue
        w = synsets[o][0][0]
        if w in CORE and w not in first:
            chosen.append(w)
    own = synsets[offset][0][0]
    terms: list[str] = []
    for w in chosen:
        for t in RENAME.get(w, [w]):
            if t not in terms and t != own:
                terms.append(t)
    return terms[:MAX_HYPERNYMS]


def build(wnids: list[str], synsets) -> list[dict]:
    table = []
    for wnid in wnids:
        off = wnid[1:]
        if off not in synsets:
            sys.exit(f"{wnid} not found in data.noun (is it WordNet 3.0?)")
        name = NAME_OVERRIDES.get(wnid, synsets[off][0][0])
        table.append({"wnid": wnid, "name": name, "hypernyms": hypernym_terms(off, synsets)})
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synsets", help="imagenet_synsets.txt (1000 wnids in order) or a timm wheel")
    ap.add_argument("--wordnet", default=str(DEFAULT_WORDNET), help="WordNet 3.0 data.noun")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--print", action="store_true", help="print index, name and hypernyms")
    args = ap.parse_args(argv)

    out = Path(args.out)
    wnids = read_wnids(args.synsets, out)
    synsets = read_data_noun(Path(args.wordnet))
    table = build(wnids, synsets)
    if args.print:
        for i, e in enumerate(table):
            print(i, e["wnid"], e["name"], "→", ", ".join(e["hypernyms"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    # one entry per line: small, diff-friendly
    text = "[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in table) + "\n]\n"
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.encode()):,} bytes, {len(table)} classes)", file=sys.stderr)


if __name__ == "__main__":
    main()
