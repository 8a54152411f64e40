"""imgsearch.search.bm25 (SQLite FTS5) against a reference BM25 with the same k1/b/idf."""
import math
import random
import sqlite3

import pytest

from imgsearch.search import bm25
from imgsearch.search.bm25_cache import BM25Cache
from imgsearch.text.normalize import search_terms

SUBJ = ["a black dog", "two children", "a man in a red shirt", "a woman", "a brown dog", "a group of people",
        "a young boy", "a girl in a pink dress", "a surfer", "a skier", "two dogs", "an old man", "a cyclist"]
ACT = ["is running", "are playing", "is climbing", "walks", "jumps", "stand", "rides a bicycle", "sits",
       "is riding a wave", "jumps over a fence", "is swimming", "is eating", "plays with a ball"]
PLACE = ["through the grass", "on the beach", "up a rock wall", "down the street", "in the park",
         "in front of a building", "along the road", "on a bench", "in the ocean", "down a snowy mountain",
         "in the snow", "at a table", "near the water", "in a field"]
QUERIES = ["dog", "black dog running", "children playing on the beach", "man climbing rock", "snow",
           "girl pink dress bench", "surfer wave ocean", "people building", "dog dog dog", "the a of",
           "cyclist road", "old man eating", "ball", "swimming in the water", "boy bicycle street",
           "brown dogs jumping fences", "woman", "skier mountain snow", "field", "red shirt"]


def corpus(n=300, seed=0):
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        caps = [f"{rng.choice(SUBJ)} {rng.choice(ACT)} {rng.choice(PLACE)}" for _ in range(rng.randint(1, 3))]
        docs.append((1000 + 3 * i, " . ".join(caps)))
    return docs


class FTS5Reference:
    """BM25 exactly as FTS5 computes it: k1=1.2, b=0.75, idf=ln((N-n+0.5)/(n+0.5)) floored at 1e-6."""

    def __init__(self, docs):
        self.ids = [i for i, _ in docs]
        self.terms = [search_terms(t) for _, t in docs]
        self.N = len(docs)
        self.avgdl = sum(map(len, self.terms)) / self.N
        self.df = {}
        for ts in self.terms:
            for t in set(ts):
                self.df[t] = self.df.get(t, 0) + 1

    def scores(self, query):
        q = bm25.query_terms(query)
        out = {}
        for i, ts in zip(self.ids, self.terms):
            s = 0.0
            for t in q:
                f = ts.count(t)
                if f:
                    n = self.df[t]
                    idf = math.log((self.N - n + 0.5) / (n + 0.5))
                    idf = idf if idf > 0 else 1e-6
                    s += idf * f * (bm25.K1 + 1) / (f + bm25.K1 * (1 - bm25.B + bm25.B * len(ts) / self.avgdl))
            if s > 0:
                out[i] = s
        return out


def rank_bm25_scores(docs, query):
    """rank-bm25 (BM25Okapi with FTS5's idf floor), kept as the reference scorer."""
    rb = pytest.importorskip("rank_bm25")

    class FTS5Okapi(rb.BM25Okapi):
        def _calc_idf(self, nd):
            for word, freq in nd.items():
                idf = math.log(self.corpus_size - freq + 0.5) - math.log(freq + 0.5)
                self.idf[word] = idf if idf > 0 else 1e-6

    model = FTS5Okapi([search_terms(t) for _, t in docs], k1=bm25.K1, b=bm25.B)
    s = model.get_scores(bm25.query_terms(query))
    return {i: float(v) for (i, _), v in zip(docs, s) if v > 0}


def top(scores, k=10):
    return sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]


def assert_same_topk(got, ref_scores, k=10):
    ref = top(ref_scores, k)
    assert len(got) == len(ref)
    assert [i for i, _ in got] == [i for i, _ in ref], (got, ref)
    for (_, a), (_, b) in zip(got, ref):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def _make_db(path):
    conn = sqlite3.connect(path)
    bm25.ensure_fts(conn)
    docs = corpus()
    with conn:
        assert bm25.upsert_documents(conn, docs) == len(docs)
    return conn, docs


@pytest.fixture
def db(tmp_path):
    conn, docs = _make_db(tmp_path / "lib.db")
    yield conn, docs
    conn.close()


@pytest.fixture(scope="module")
def ro_db(tmp_path_factory):
    conn, docs = _make_db(tmp_path_factory.mktemp("bm25") / "lib.db")
    yield conn, docs
    conn.close()


def test_same_top10_as_reference(ro_db):
    conn, docs = ro_db
    ref = FTS5Reference(docs)
    for q in QUERIES:
        got = bm25.search(conn, q, 10)
        assert_same_topk(got, ref.scores(q))
        assert_same_topk(got, rank_bm25_scores(docs, q))


def test_upsert_delete_and_filter(db):
    conn, docs = db
    with conn:
        bm25.upsert_documents(conn, [(1000, "a purple elephant . purple elephant")])  # replace
        bm25.upsert_documents(conn, [(7, "an elephant")])  # new
    assert bm25.count(conn) == len(docs) + 1
    assert [i for i, _ in bm25.search(conn, "purple elephant", 5)] == [1000, 7]
    assert bm25.search(conn, "elephant", 5, ids_filter=[7, 12345]) == bm25.search(conn, "elephant", 5)[1:]
    assert bm25.search(conn, "elephant", 5, ids_filter=[]) == []
    assert bm25.search(conn, "elephant", 0) == []
    with conn:
        bm25.delete_documents(conn, [7, 99999])
    assert [i for i, _ in bm25.search(conn, "elephant", 5)] == [1000]
    # rolled-back writes are not visible: the table is transactional with the photo rows
    conn.execute("BEGIN")
    bm25.upsert_documents(conn, [(8, "giraffe")])
    conn.rollback()
    assert bm25.search(conn, "giraffe", 5) == []
    # after the edits the ranking still equals the reference over the current documents
    cur = {i: t for i, t in docs}
    cur[1000] = "a purple elephant . purple elephant"
    cur = sorted(cur.items())
    ref = FTS5Reference(cur)
    for q in QUERIES[:6]:
        assert_same_topk(bm25.search(conn, q, 10), ref.scores(q))
    bm25.optimize(conn)
    bm25.clear(conn)
    assert bm25.count(conn) == 0


NASTY = ["", "   ", "AND OR NOT", "AND", '"', '""', "'", "*", "dog*", "^dog", "-dog", "+dog", "NEAR(", "NEAR(dog cat, 2)",
         "(", ")", "{terms} : dog", "terms:dog", "dog AND", "NOT dog", "dog OR", "🐶🏖️", "犬", "\x00dog", "' OR 1=1 --",
         "dog\"; DROP TABLE photo_fts; --", "x" * 10000, "dog " * 2500, "a b c d e f g h i j k l m n o p q r s t " * 500,
         "%", "_", "\\", "[dog]", "dog:*", "ÅNGSTRÖM café"]


@pytest.mark.parametrize("q", NASTY, ids=range(len(NASTY)))
def test_nasty_queries_never_raise(ro_db, q):
    conn, _ = ro_db
    res = bm25.search(conn, q, 10)
    assert isinstance(res, list)
    assert all(isinstance(i, int) and isinstance(s, float) for i, s in res)
    assert bm25.search(conn, q, 10, ids_filter=[1000, 1003]) is not None


def test_query_terms_bounded_and_quoted():
    assert bm25.query_terms("dogs dog DOG running") == ["dog", "run"]
    assert len(bm25.query_terms(" ".join(f"w{i}" for i in range(1000)))) == bm25.MAX_QUERY_TERMS
    assert bm25.match_expression(["dog", 'a"b']) == '"dog" OR "a""b"'


def test_sqlalchemy_connection_and_session(tmp_path):
    sa = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    eng = sa.create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    with eng.begin() as c:
        bm25.ensure_fts(c)
        bm25.upsert_documents(c, [(1, "a dog on the beach"), (2, "a cat on a sofa")])
    with eng.connect() as c:
        assert [i for i, _ in bm25.search(c, "dog beach", 5)] == [1]
    with Session(eng) as s:
        bm25.upsert_documents(s, [(3, "dogs playing on a beach")])
        assert [i for i, _ in bm25.search(s, "dog", 5)] == [1, 3]
        s.rollback()
        assert [i for i, _ in bm25.search(s, "dog", 5)] == [1]
        bm25.delete_documents(s, [1])
        s.commit()
    with eng.connect() as c:
        assert bm25.search(c, "dog", 5) == [] and bm25.count(c) == 1


# ---------------------------------------------------------------- BM25Cache (accelerator)

def test_cache_matches_fts5(ro_db, tmp_path):
    conn, docs = ro_db
    cache = BM25Cache.build(conn, revision=7)
    assert len(cache) == len(docs)
    ref = FTS5Reference(docs)
    for q in QUERIES:
        got = cache.search(q, 10)
        want = bm25.search(conn, q, 10)
        assert [i for i, _ in got] == [i for i, _ in want], q
        for (_, a), (_, b) in zip(got, want):
            assert a == pytest.approx(b, rel=1e-5)
        assert_same_topk(want, ref.scores(q))
        assert cache.search(q, 5, ids_filter=[1000, 1003, 1006]) == [
            (i, pytest.approx(s, rel=1e-5)) for i, s in bm25.search(conn, q, 5, ids_filter=[1000, 1003, 1006])]
    for q in NASTY:
        assert isinstance(cache.search(q, 10), list)
    assert cache.search("dog", 0) == [] and cache.search("dog", 5, ids_filter=[]) == []


def test_cache_persistence_and_freshness(ro_db, tmp_path):
    conn, _ = ro_db
    p = tmp_path / "library.db.bm25"
    BM25Cache.build(conn).save(p, revision=3)
    assert BM25Cache.open(p, 3) is not None
    assert BM25Cache.open(p, 4) is None  # stale
    assert BM25Cache.open(tmp_path / "missing", 3) is None
    loaded = BM25Cache.load(p)
    assert loaded.search("black dog", 10) == BM25Cache.build(conn).search("black dog", 10)
    p.write_bytes(p.read_bytes()[:100])  # damaged
    assert BM25Cache.open(p, 3) is None
    empty = BM25Cache.from_documents([], revision=1)
    assert empty.search("dog") == []
    empty.save(tmp_path / "e.bm25")
    assert len(BM25Cache.load(tmp_path / "e.bm25")) == 0


def test_cache_pruned_top_k_is_exact():
    """MaxScore pruning (BM25Cache.search_pruned) returns exactly the full scoring's top k, ties included."""
    import numpy as np

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(300)]
    p = 1.0 / np.arange(1, 301) ** 1.1                      # Zipf: a few words in most documents
    p /= p.sum()
    docs = [(i + 1, " ".join(rng.choice(words, size=int(rng.integers(3, 14)), p=p))) for i in range(6000)]
    docs += [(7000 + i, "w0 w1 w2") for i in range(60)]      # many exact ties
    cache = BM25Cache.from_documents(docs)
    pruned_used = 0
    for qi in range(150):
        q = " ".join(rng.choice(words[:60] if qi % 2 else words, size=int(rng.integers(2, 8)), p=None))
        k = int(rng.choice([1, 10, 40]))
        cols = [cache.vocab[t] for t in bm25.query_terms(q) if t in cache.vocab]
        scores = np.zeros(len(cache.ids), dtype=np.float32)
        for c in cols:
            scores[cache.rows[cache.indptr[c]:cache.indptr[c + 1]]] += cache.data[cache.indptr[c]:cache.indptr[c + 1]]
        order = np.lexsort((cache.ids, -scores))[:k]
        want = [(int(cache.ids[j]), float(scores[j])) for j in order if scores[j] > 0]
        assert cache.search(q, k) == want, q
        pruned_used += len(cols) > 1 and cache.search_pruned(cols, k) is not None
    assert pruned_used > 30                                  # the pruned path really ran


def test_document_terms_in_pieces_equal_the_whole_documents_terms():
    """store/writes.document_terms_of (the bulk ingest's documents, keywords/tags/places normalised a piece at a
    time through bm25.piece_terms) stores exactly what document_terms(doc_text(...)) stores, for pieces with
    accents, apostrophes, punctuation, digits, stopwords, combining marks, full-width letters and empty ones."""
    from imgsearch.store.writes import doc_text, document_terms_of

    rng = random.Random(11)
    atoms = ["dog", "Café", "don't", "O\u2019Brien", "the", "a", "straße", "ＦＵＬＬ", "e\u0301te\u0301", "\u0301x",
             "x'", "'", "2024", "beach.", "—", ".", "", " ", "  running  ", "évening", "Ünïcode", "ﬁsh", "ΣΊΣΥΦΟΣ",
             "日本", "new-york", "it's", "dogs!", "\u2019s"]

    def piece():
        return " ".join(rng.choice(atoms) for _ in range(rng.randint(0, 4)))

    checked = 0
    for _ in range(600):
        caps = [piece() for _ in range(rng.randint(0, 4))]
        kws = [piece() for _ in range(rng.randint(0, 4))]
        tags = [piece() for _ in range(rng.randint(0, 4))]
        place = rng.choice([None, "", piece(), "Zürich, Switzerland", "Saint-Étienne"])
        want = bm25.document_terms(doc_text(caps, kws, tags, place))
        assert document_terms_of(caps, kws, tags, place) == want, (caps, kws, tags, place)
        checked += bool(want)
    assert checked > 400                                      # most documents were not empty
