"""Caption metrics computed the way the COCO caption evaluation computes them.

``corpus_scores`` tokenises every hypothesis and reference with ``coco_tokenize`` and then
runs pycocoevalcap's own ``Bleu(4)`` and ``Cider()`` scorers (pure Python) on the
tokenised strings — the same pipeline as ``pycocoevalcap.eval.COCOEvalCap`` except that
the Java ``PTBTokenizer`` step is replaced by a pure-Python re-implementation, so no
Java is needed.

``coco_tokenize`` mimics ``java edu.stanford.nlp.process.PTBTokenizer -preserveLines
-lowerCase`` (Stanford CoreNLP 3.4.1, the jar pycocoevalcap ships) followed by
pycocoevalcap's removal of the tokens in ``PUNCTUATIONS``. What it reproduces:

* lower-casing of the output tokens — including the bracket tokens: ``(`` becomes
  ``-lrb-``, which pycocoevalcap does *not* remove because its list has ``-LRB-`` in upper
  case; ``[ ]`` / ``{ }`` likewise become ``-lsb- -rsb-`` / ``-lcb- -rcb-`` and stay;
* punctuation split off words and dropped: ``. , ; : ? !``, quotes, ``-``, ``--``, ``...``;
* clitics split: ``dog's → dog 's``, ``isn't → is n't``, ``I'm → i 'm``, ``they're``,
  ``we'll``, ``you've``, ``he'd``, plus ``cannot → can not``, ``gonna → gon na``,
  ``wanna → wan na``, ``gotta → got ta``; a trailing possessive apostrophe (``dogs'``)
  is split off and dropped;
* words with inner hyphens, slashes, ampersands, apostrophes (``o'clock``) and periods
  (``a.m.``, ``u.s.``) stay whole; numbers keep ``.``/``,``/``:``/``/`` inside them;
  ``%``, ``$``, ``#`` are separate tokens; common abbreviations (``mr.``, ``st.``,
  ``etc.``, …) keep their period.

Known differences (rare in captions): CoreNLP's full abbreviation list, URLs/e-mail
addresses, emoticons, SGML tags and some Unicode punctuation are approximated;
``etc.`` at a sentence end (CoreNLP emits ``etc. .``) gives the same output after
punctuation removal; ``dog!cat`` (CoreNLP keeps one token) is split; ``@home``/``<tag>``
are split into symbols. Agreement with the Java tokenizer: 100 % of the 5,000 Flickr8k dev
and 30,000 train captions (checked on 200 dev captions in ``tests/test_metrics.py``).
"""
from __future__ import annotations

import contextlib
import io
import re
import unicodedata
from typing import Hashable, Mapping, Sequence

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS (copied: importing that module is cheap,
# but keeping the list here documents exactly what is removed)
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# Abbreviations CoreNLP's PTBLexer keeps with their period (subset relevant to captions).
_ABBREV = frozenset("""
mr mrs ms dr st jr sr vs etc prof gen col capt lt sgt rev gov sen rep mt ft no inc co corp ltd
jan feb mar apr aug sept oct nov dec mon tue wed thu fri sat sun ave blvd rd
""".split())

_L = r"[^\W_]"  # a letter or digit (Unicode)
_TOKEN = re.compile(
    rf"""
    (?P<ellipsis>\.\.\.+|…)                       # "...." → "..."
  | (?P<dashes>--+|—|–)                          # "----" → "--"
  | (?P<clitic>(?i:'(?:s|re|ll|ve|m|d)|n't)(?!{_L}))   # already split: "man 's", "do n't"
  | (?P<lead>(?i:'(?:em|tis|twas))(?!{_L}))      # 'em; 'tis → 't is
  | (?P<acronym>(?:[^\W\d_]\.){{2,}})            # a.m.  u.s.  e.g. (letters only: 5.5. → 5.5 .)
  | (?P<number>\d+(?:[.,:/]\d+)+)                # 3.5  1,000  10:30  24/7  (3.5mm → 3.5 mm)
  | (?P<ampword>[A-Z]+&[A-Z]+(?![^\W\d_]))       # AT&T  R&B  (lower-case at&t is split)
  | (?P<nquote>'n'?(?!{_L}))                     # rock 'n' roll
  | (?P<word>{_L}+(?:[-/'.]{_L}+)*)              # well-dressed black/white o'clock 1990s dog.the
  | (?P<bang>[!?]{{2,}})                          # "!!" "?!" stay one token (and are not removed)
  | (?P<other>\S)
    """,
    re.VERBOSE,
)

_CLITIC = re.compile(r"(?i)^(.+?)(n't|'(?:s|re|ll|ve|m|d))$")
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "wanna": ("wan", "na"),
                "gotta": ("got", "ta"), "gimme": ("gim", "me"), "lemme": ("lem", "me")}


def _split_word(word: str) -> list[str]:
    """Clitics and fused words of one word token."""
    fused = _SPLIT_WORDS.get(word.lower())
    if fused:
        return [word[: len(fused[0])], word[len(fused[0]) :]]
    m = _CLITIC.match(word)
    if m:
        return [m.group(1), m.group(2)]
    return [word]


def ptb_tokens(text: str) -> list[str]:
    """Approximate Stanford PTBTokenizer tokens (original case, PTB escapes) of one line."""
    text = unicodedata.normalize("NFC", text.replace("\n", " "))
    text = text.replace("’", "'").replace("‘", "'")  # CoreNLP emits ASCII clitics: dog’s → dog 's
    out: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        assert m is not None  # "other" matches any non-space character
        kind, tok, pos = m.lastgroup, m.group(), m.end()
        if kind == "word":
            parts = _split_word(tok)
            # "mr." / "etc." / "u." (any single letter): an abbreviation keeps its period
            last = parts[-1]
            if text[pos : pos + 1] == "." and (last.lower() in _ABBREV or (len(last) == 1 and last.isalpha())):
                parts[-1] += "."
                pos += 1
            out.extend(parts)
        elif kind == "other":
            if tok in _BRACKETS:
                out.append(_BRACKETS[tok])
            elif tok in ('"', "“", "”"):
                out.append("''")  # opening/closing direction does not matter: both are removed
            else:
                out.append(tok)
        elif kind == "lead":
            out.extend(["'t", tok[2:]] if tok[1:].lower() in ("tis", "twas") else [tok])
        elif kind == "ellipsis":
            out.append("...")  # CoreNLP normalises "...." to "..."
        elif kind == "dashes":
            out.append("--")  # and "----" to "--"
        else:
            out.append(tok)
    return out


def coco_tokenize(text: str) -> str:
    """Tokenise one caption as COCO evaluation does: PTB tokens, lower-cased, punctuation removed."""
    return " ".join(t for t in (t.lower() for t in ptb_tokens(text)) if t not in PUNCTUATIONS)


def corpus_scores(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D exactly as pycocoevalcap computes them.

    ``hypotheses`` maps an image key to one generated caption, ``references`` maps the same
    keys to their reference captions (raw text; both are tokenised with ``coco_tokenize``).
    CIDEr-D document frequencies come from the references of this corpus (as in COCO eval).
    Returns ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"}``.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    keys = list(hypotheses)
    if not keys:
        raise ValueError("no hypotheses")
    missing = [k for k in keys if not references.get(k)]
    if missing:
        raise ValueError(f"{len(missing)} hypotheses have no references, e.g. {missing[0]!r}")
    res = {k: [coco_tokenize(hypotheses[k])] for k in keys}
    gts = {k: [coco_tokenize(r) for r in references[k]] for k in keys}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    out = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, 1)}
    out["CIDEr"] = float(cider)
    return out
