import subprocess
import sys

from imgsearch.text import normalize as N


def test_tokenize_basic():
    assert N.tokenize("A Dog's ball, running-fast!") == ["a", "dogs", "ball", "running", "fast"]
    assert N.tokenize("Don't stop") == ["dont", "stop"]
    assert N.tokenize("don\u2019t") == ["dont"]
    assert N.tokenize("") == []
    assert N.tokenize("   ...!!! ") == []
    assert N.tokenize("2 dogs 10km") == ["2", "dogs", "10km"]


def test_tokenize_unicode():
    assert N.tokenize("Café CRÈME") == ["cafe", "creme"]
    assert N.tokenize("Straße") == ["strasse"]
    assert N.tokenize("ﬁsh") == ["fish"]  # NFKC ligature
    assert N.tokenize("ＦＵＬＬ width") == ["full", "width"]
    assert N.tokenize("dog 🐶 犬 cat") == ["dog", "cat"]


def test_stopwords():
    assert isinstance(N.STOPWORDS, frozenset)
    assert 150 <= len(N.STOPWORDS) <= 250
    for w in ["the", "a", "and", "is", "dont", "of", "with"]:
        assert w in N.STOPWORDS
    # contractions colliding with content words are not stopwords
    for w in ["well", "shed", "shell", "dog", "man"]:
        assert w not in N.STOPWORDS
    assert all(w == w.lower() and w.isalnum() for w in N.STOPWORDS)


def test_stem():
    assert N.stem("running") == "run"
    assert N.stem("dogs") == "dog"
    assert N.stem("jumps") == N.stem("jumping") == "jump"
    assert N.stem("dog") == "dog"
    assert N.stem("evening") != N.stem("even") and N.stem("university") != N.stem("universe")


def test_search_terms():
    assert N.search_terms("The dogs are running in the park") == ["dog", "run", "park"]
    assert N.search_terms("") == []
    assert N.search_terms("the and of") == []
    assert N.search_terms("AND OR NOT \"*\" NEAR(") == ["near"]


def test_keywords():
    assert N.keywords(["A black dog runs", "The dog is black and white"]) == ["black", "dog", "runs", "white"]
    assert N.keywords([]) == []
    assert N.keywords(["the a of"]) == []


def test_import_and_first_stem_are_cheap():
    code = ("import sys, imgsearch.text.normalize as n; n.tokenize('a b'); n.search_terms('dogs running'); "
            "print(any(m in sys.modules for m in ('nltk', 'scipy', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
