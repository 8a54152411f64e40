"""ImageNet tag table and logits → tags."""
from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest

from imgsearch.model.tags import load_tag_table, tags_from_logits

SINK = 999  # toilet tissue: hypernyms "tissue", "paper" unrelated to the classes tested


def logits_for(probs: dict[int, float]) -> np.ndarray:
    """Logits whose softmax puts ``probs`` on the given classes and the remainder on SINK."""
    assert SINK not in probs
    x = np.full(1000, -60.0)  # ~1e-26 each after softmax
    for i, p in probs.items():
        x[i] = np.log(p)
    x[SINK] = np.log(max(1.0 - sum(probs.values()), 1e-12))
    return x


def terms(row):
    return [t for t, _ in row]


def test_table_shape_and_ids():
    t = load_tag_table()
    assert len(t.wnids) == len(t.names) == len(t.hypernyms) == 1000
    assert len(set(t.wnids)) == 1000
    assert all(re.fullmatch(r"n\d{8}", w) for w in t.wnids)
    assert t.wnids[0] == "n01440764" and t.wnids[-1] == "n15075141"
    assert t.names[0] == "tench" and t.names[999] == "toilet tissue"
    assert load_tag_table() is t  # cached


def test_names_readable():
    t = load_tag_table()
    for name, hs in zip(t.names, t.hypernyms):
        for s in (name, *hs):
            assert s and "_" not in s and s == s.strip()
        assert len(set(hs)) == len(hs)
        assert name not in hs


def test_package_data_small():
    f = resources.files("imgsearch.model").joinpath("data/imagenet_tags.json")
    data = f.read_bytes()
    assert len(data) < 200_000
    assert len(json.loads(data)) == 1000


@pytest.mark.parametrize(
    "idx,wnid,name,must",
    [
        (207, "n02099601", "golden retriever", {"dog", "animal"}),
        (281, "n02123045", "tabby", {"cat", "animal"}),
        (967, "n07920052", "espresso", {"coffee", "drink"}),
        (978, "n09428293", "seashore", {"shore"}),
        (817, "n04285008", "sports car", {"car", "vehicle"}),
        (0, "n01440764", "tench", {"fish", "animal"}),
        (985, "n11939491", "daisy", {"flower", "plant"}),
        (402, "n02676566", "acoustic guitar", {"instrument"}),
        (963, "n07873807", "pizza", {"food"}),
        (14, "n01537544", "indigo bunting", {"bird", "animal"}),
    ],
)
def test_known_classes(idx, wnid, name, must):
    t = load_tag_table()
    assert t.wnids[idx] == wnid
    assert t.names[idx] == name
    assert must <= set(t.hypernyms[idx]), t.hypernyms[idx]


def test_abstract_words_dropped():
    t = load_tag_table()
    every = {h for hs in t.hypernyms for h in hs}
    for bad in ("entity", "physical entity", "object", "whole", "artifact", "organism",
                "living thing", "instrumentality", "abstraction", "matter", "vertebrate", "chordate"):
        assert bad not in every


def test_confident_class_and_hypernyms():
    (row,) = tags_from_logits(logits_for({207: 0.9}))
    d = dict(row)
    assert d["golden retriever"] == pytest.approx(0.9, abs=1e-6)
    assert d["dog"] >= 0.9 - 1e-6 and "animal" in d
    scores = [s for _, s in row]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(s, float) for s in scores)


def test_summed_hypernym_passes_threshold():
    # three retrievers at 0.15 each: no class passes 0.25, "dog" (0.45) does
    (row,) = tags_from_logits(logits_for({207: 0.15, 208: 0.15, 209: 0.15}), threshold=0.25)
    d = dict(row)
    t = load_tag_table()
    assert not any(t.names[i] in d for i in (207, 208, 209))
    assert d["dog"] == pytest.approx(0.45, abs=1e-6)
    assert d["animal"] >= d["dog"]
    assert all(s >= 0.25 for s in d.values())


def test_threshold_respected():
    x = logits_for({281: 0.3, 282: 0.2, 817: 0.1})
    (row,) = tags_from_logits(x, threshold=0.25)
    d = dict(row)
    assert "tabby" in d and "tiger cat" not in d and "sports car" not in d
    assert d["cat"] == pytest.approx(0.5, abs=1e-6)  # tabby + tiger cat
    assert "car" not in d
    (row,) = tags_from_logits(x, threshold=0.05)
    d = dict(row)
    assert {"tabby", "tiger cat", "sports car", "car"} <= set(d)
    (row,) = tags_from_logits(x, threshold=0.9)
    assert row == []


def test_top_limits_class_names():
    probs = {i: 0.13 for i in (0, 100, 300, 500, 700, 900, 950)}  # sink gets 0.09
    x = logits_for(probs)
    t = load_tag_table()
    names = {t.names[i] for i in probs}
    (row,) = tags_from_logits(x, threshold=0.1, top=3)
    assert len([n for n in terms(row) if n in names]) == 3
    (row,) = tags_from_logits(x, threshold=0.1, top=0)
    assert not (set(terms(row)) & names)
    assert "animal" in terms(row)  # hypernyms unaffected by top


def test_batch_and_single_row_and_torch():
    x = np.stack([logits_for({207: 0.9}), logits_for({967: 0.9})])
    rows = tags_from_logits(x)
    assert len(rows) == 2
    assert "golden retriever" in terms(rows[0]) and "espresso" in terms(rows[1])
    (single,) = tags_from_logits(x[0])
    assert terms(single) == terms(rows[0])
    assert [s for _, s in single] == pytest.approx([s for _, s in rows[0]])
    torch = pytest.importorskip("torch")
    rows_t = tags_from_logits(torch.from_numpy(x).float())
    assert [terms(r) for r in rows_t] == [terms(r) for r in rows]
    for rt, r in zip(rows_t, rows):
        assert [s for _, s in rt] == pytest.approx([s for _, s in r], abs=1e-5)


def test_softmax_is_shift_invariant_and_stable():
    x = logits_for({978: 0.8})
    a = tags_from_logits(x)
    b = tags_from_logits(x + 1000.0)  # no overflow
    assert terms(a[0]) == terms(b[0])
    assert "seashore" in terms(a[0]) and "shore" in terms(a[0])


def test_bad_shape():
    with pytest.raises(ValueError):
        tags_from_logits(np.zeros((2, 10)))


def test_generator_reproduces_shipped_table(tmp_path):
    """tools/make_imagenet_tags.py regenerates the shipped JSON byte for byte (needs wordnet-base)."""
    import importlib.util
    from pathlib import Path

    data_noun = Path("/usr/share/wordnet/data.noun")
    if not data_noun.exists():
        pytest.skip("WordNet data.noun (Debian package wordnet-base) not installed")
    script = Path(__file__).resolve().parents[1] / "tools" / "make_imagenet_tags.py"
    spec = importlib.util.spec_from_file_location("make_imagenet_tags", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = resources.files("imgsearch.model").joinpath("data/imagenet_tags.json").read_text("utf-8")
    wnids = tmp_path / "synsets.txt"
    wnids.write_text("\n".join(e["wnid"] for e in json.loads(shipped)) + "\n")
    out = tmp_path / "tags.json"
    mod.main(["--synsets", str(wnids), "--wordnet", str(data_noun), "--out", str(out)])
    assert out.read_text("utf-8") == shipped


def test_class_order_matches_torchvision():
    meta = pytest.importorskip("torchvision.models._meta")
    tv = meta._IMAGENET_CATEGORIES
    names = load_tag_table().names
    differ = [i for i in range(1000) if names[i] != tv[i]]
    # torchvision disambiguates two duplicate lemmas: "crane bird" (134), "maillot tank suit" (639)
    assert differ == [134, 639], [(i, names[i], tv[i]) for i in differ]
