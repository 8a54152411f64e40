"""COCO caption metrics: tokeniser + corpus BLEU/CIDEr."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from imgsearch.model.metrics import PUNCTUATIONS, coco_tokenize, corpus_scores

FLICKR_DEV = Path("/work/shared/data/flickr8k/captions_dev.json")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("A dog runs on the grass .", "a dog runs on the grass"),
        ("A dog's ball isn't red.", "a dog 's ball is n't red"),
        ("A man 's hat", "a man 's hat"),                       # already split clitic
        ("Two dogs,one brown; one black!", "two dogs one brown one black"),
        ('a person in a "Ghostbusters" shirt', "a person in a ghostbusters shirt"),
        ("I'm sure they're fine, we'll see", "i 'm sure they 're fine we 'll see"),
        ("He cannot go, gonna run", "he can not go gon na run"),
        ("a well-dressed 2-year-old in a t-shirt", "a well-dressed 2-year-old in a t-shirt"),
        ("the dog (really) [yes]", "the dog -lrb- really -rrb- -lsb- yes -rsb-"),  # lower-cased, kept
        ("wait... two -- three - four", "wait two three four"),
        ("3.5mm at 10:30pm, $5.00 or 10%", "3.5 mm at 10:30 pm $ 5.00 or 10 %"),
        ("the 1990s 4x4 on 3rd St .", "the 1990s 4x4 on 3rd st"),
        ("Mr. Smith at 5 a.m. in the U.S.", "mr. smith at 5 a.m. in the u.s."),
        ("an orange U. Miami shirt", "an orange u. miami shirt"),
        ("the dog’s “ball”", "the dog 's ball"),
        ("AT&T and at&t", "at&t and at & t"),
        ("Dogs' toys", "dogs toys"),
        ("slip 'n' slide", "slip 'n' slide"),
        ("wow!! what?!", "wow !! what ?!"),
        ("", ""),
    ],
)
def test_coco_tokenize(text, expected):
    assert coco_tokenize(text) == expected


def test_tokenize_removes_only_listed_punctuation():
    out = coco_tokenize("Hello , world . ; : ? ! ' `` '' -- ... -")
    assert out == "hello world"
    assert not set(out.split()) & PUNCTUATIONS


def test_bleu_by_hand():
    hyps = {1: "the cat sat on mat", 2: "a red ball"}
    refs = {1: ["the cat sat on the mat"], 2: ["a blue ball"]}
    s = corpus_scores(hyps, refs)
    # corpus BLEU: clipped matches / hypothesis n-grams summed over images, brevity penalty
    # with the closest reference length (9) against the hypothesis length (8)
    bp = math.exp(1 - 9 / 8)
    p1 = (5 + 2) / (5 + 3)
    p2 = (3 + 0) / (4 + 2)  # the cat, cat sat, sat on | (a red, red ball) no match
    assert s["BLEU-1"] == pytest.approx(bp * p1, rel=1e-6)
    assert s["BLEU-2"] == pytest.approx(bp * math.sqrt(p1 * p2), rel=1e-6)
    assert set(s) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"}
    assert all(isinstance(v, float) for v in s.values())


def _toy_refs():
    return {
        "a": ["a black dog runs across the green grass", "a dog running on grass"],
        "b": ["two children play in the sand at the beach", "kids playing on a beach"],
        "c": ["a man rides a red bicycle down the street", "a cyclist on a city road"],
        "d": ["a woman holds a cup of coffee in a cafe", "a lady drinking coffee"],
    }


def test_identical_hypothesis_scores_high():
    refs = _toy_refs()
    hyps = {k: v[0] for k, v in refs.items()}
    s = corpus_scores(hyps, refs)
    assert s["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert s["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert s["CIDEr"] > 3.0


def test_case_and_punctuation_do_not_matter():
    refs = _toy_refs()
    plain = corpus_scores({k: v[0] for k, v in refs.items()}, refs)
    shouty = corpus_scores({k: v[0].upper() + " ." for k, v in refs.items()}, refs)
    assert shouty == pytest.approx(plain)


def test_disjoint_hypothesis_scores_zero():
    refs = _toy_refs()
    hyps = {k: "purple elephants juggle quietly" for k in refs}
    s = corpus_scores(hyps, refs)
    assert s["BLEU-1"] == pytest.approx(0.0, abs=1e-6)
    assert s["BLEU-4"] == pytest.approx(0.0, abs=1e-6)
    assert s["CIDEr"] == pytest.approx(0.0, abs=1e-9)


def test_better_hypothesis_scores_higher():
    refs = _toy_refs()
    good = corpus_scores({"a": "a dog runs on the grass", "b": "children playing on the beach",
                          "c": "a man rides a bicycle", "d": "a woman drinking coffee"}, refs)
    bad = corpus_scores({"a": "a man on the street", "b": "a dog in the grass",
                         "c": "a woman with coffee", "d": "kids at the beach"}, refs)
    for k in ("BLEU-1", "BLEU-4", "CIDEr"):
        assert good[k] > bad[k]


def test_quiet_and_validates(capsys):
    refs = _toy_refs()
    corpus_scores({k: v[1] for k, v in refs.items()}, refs)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError):
        corpus_scores({"zzz": "a dog"}, refs)
    with pytest.raises(ValueError):
        corpus_scores({}, refs)


def _java_jar() -> Path | None:
    if shutil.which("java") is None:
        return None
    import pycocoevalcap

    for root in pycocoevalcap.__path__:
        jar = Path(root) / "tokenizer" / "stanford-corenlp-3.4.1.jar"
        if jar.exists():
            return jar
    return None


def _java_tokenize(captions: list[str], jar: Path, tmp_path: Path) -> list[str]:
    """What pycocoevalcap's PTBTokenizer returns, without writing into site-packages."""
    src = tmp_path / "captions.txt"
    src.write_text("\n".join(c.replace("\n", " ") for c in captions), encoding="utf-8")
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
           "-preserveLines", "-lowerCase", str(src)]
    lines = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout.decode().split("\n")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
            for line in lines[: len(captions)]]


def test_agrees_with_java_ptbtokenizer(tmp_path):
    """On 200 Flickr8k dev captions our tokeniser matches the Java PTBTokenizer (≥ 99 %)."""
    jar = _java_jar()
    if jar is None:
        pytest.skip("java or the pycocoevalcap CoreNLP jar is not available")
    if not FLICKR_DEV.exists():
        pytest.skip(f"{FLICKR_DEV} not present")
    data = json.loads(FLICKR_DEV.read_text())
    anns = data["annotations"][:200]
    captions = [a["caption"] for a in anns]
    java = _java_tokenize(captions, jar, tmp_path)
    assert len(java) == len(captions)
    ours = [coco_tokenize(c) for c in captions]
    agree = sum(a == b for a, b in zip(ours, java)) / len(captions)
    print(f"tokeniser agreement with Java PTBTokenizer: {agree:.4f} on {len(captions)} captions")
    assert agree >= 0.99, [(c, a, b) for c, a, b in zip(captions, ours, java) if a != b][:5]

    # and the metrics on the same data match those on Java-tokenised text exactly
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    import contextlib
    import io

    by_img: dict[int, list[int]] = {}
    for i, a in enumerate(anns):
        by_img.setdefault(a["image_id"], []).append(i)
    by_img = {k: v for k, v in by_img.items() if len(v) >= 2}
    hyps = {k: captions[v[0]] for k, v in by_img.items()}
    refs = {k: [captions[i] for i in v[1:]] for k, v in by_img.items()}
    ours_s = corpus_scores(hyps, refs)
    res = {k: [java[v[0]]] for k, v in by_img.items()}
    gts = {k: [java[i] for i in v[1:]] for k, v in by_img.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    expect = {f"BLEU-{n}": b for n, b in enumerate(bleu, 1)} | {"CIDEr": cider}
    assert ours_s == pytest.approx(expect, rel=1e-9, abs=1e-12)
