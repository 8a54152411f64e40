"""Caption-likelihood re-ranking: stored cells, the query scorer (ONNX and torch), the re-ranking rule,
and how the Library applies it to hybrid queries."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from libtools import make_set
from imgsearch import Library
from imgsearch.model import rerank as R
from imgsearch.store import hot_reads


# ----------------------------------------------------------------------------- packing

def test_pack_unpack_roundtrip_within_half_a_step():
    rng = np.random.default_rng(0)
    cells = rng.normal(size=(3, 49, 32)).astype(np.float32) * np.array([1, 5, 0.01])[:, None, None]
    cells[1, 7] = 0.0                                                    # an all-zero cell
    blobs = R.pack_cells(cells)
    assert len(blobs) == 3 and all(len(b) == 6 + 2 * 49 + 49 * 32 for b in blobs)
    back = R.unpack_cells(blobs)
    step = np.abs(cells).max(-1, keepdims=True) / 127
    assert back.shape == cells.shape
    assert np.all(np.abs(back - cells) <= step * 0.5 + 1e-3 * step + 1e-12)
    assert np.all(back[1, 7] == 0)


def test_unpack_rejects_bad_blobs():
    good = R.pack_cells(np.ones((1, 4, 8), np.float32))[0]
    with pytest.raises(ValueError, match="header"):
        R.unpack_cells([b"XX" + good[2:]])
    with pytest.raises(ValueError, match="truncated"):
        R.unpack_cells([good[:-1]])
    with pytest.raises(ValueError, match="differ"):
        R.unpack_cells([good, R.pack_cells(np.ones((1, 5, 8), np.float32))[0]])
    assert R.unpack_cells([]).shape == (0, 0, 0)


# ----------------------------------------------------------------------------- the rule

def test_rerank_reorders_the_block_and_keeps_the_tail_below():
    fused = [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.0), (5, 1.0)]
    ll = {1: -30.0, 2: -10.0, 3: -20.0}                   # 2 is by far the likeliest
    out = R.rerank(fused, ll, depth=3, weight=2.0)
    assert [i for i, _ in out] == [2, 1, 3, 4, 5]
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)         # the tail stays below the re-ranked block
    # weight 0, depth 0, or no likelihoods: the fused order unchanged
    assert R.rerank(fused, ll, depth=3, weight=0.0) == fused
    assert R.rerank(fused, ll, depth=0, weight=2.0) == fused
    assert R.rerank(fused, {}, depth=3, weight=2.0) == fused


def test_rerank_photo_without_cells_is_neutral():
    fused = [(1, 3.0), (2, 2.0), (3, 1.0)]
    # 1 has no likelihood (no stored cells): z = 0, the mean of the others' — it keeps its place between them
    out = R.rerank(fused, {2: -5.0, 3: -50.0}, depth=3, weight=1.0)
    assert [i for i, _ in out] == [1, 2, 3]
    out = R.rerank(fused, {2: -50.0, 3: -5.0}, depth=3, weight=5.0)
    assert [i for i, _ in out][0] == 3 and [i for i, _ in out][-1] == 2


# ----------------------------------------------------------------------------- the scorer

@pytest.fixture(scope="module")
def tiny():
    from imgsearch.model.captioner import Captioner

    torch.manual_seed(0)
    return Captioner.tiny(seed=3)


def _reference_loglik(cap, grid: torch.Tensor, tokens: np.ndarray) -> np.ndarray:
    """log P(tokens | image) straight from the decoder on the encoder grid (no stored cells)."""
    with torch.inference_mode():
        mem = cap.decoder.encode_memory(grid[..., :cap.config.feat_dim])
        tk = torch.from_numpy(tokens)[None].repeat(len(grid), 1)
        lp = torch.log_softmax(cap.decoder(mem, tk[:, :-1]), -1).gather(-1, tk[:, 1:, None])[..., 0]
        return lp.sum(1).numpy()


def test_scorer_matches_the_decoder_onnx_and_torch(tmp_path):
    from imgsearch.model.captioner import Captioner

    tiny = Captioner.tiny(seed=5)
    with torch.no_grad():   # an untrained decoder barely looks at the photo: make it, so photos score apart
        tiny.decoder.grid.proj.weight.mul_(30)
        tiny.decoder.layers[0].cross_attn.out.weight.mul_(10)
    grid = torch.randn(8, 49, tiny.config.feat_dim) * 2
    cells = R.cells_from_grid(tiny, grid)
    tokens = np.asarray(tiny.vocab.encode("a red circle on the grass", tiny.config.max_len), dtype=np.int64)
    want = _reference_loglik(tiny, grid, tokens)
    assert np.allclose(R.QueryScorer.from_torch(tiny).score(tokens, cells, weighted=False), want, atol=1e-4)
    # the fp32 graph is the decoder, exactly
    exact = R.export_scorer(tiny, R.scorer_path(tiny.version, tmp_path / "fp32"), quantize=False)
    fp32 = R.QueryScorer.load(tiny.version, tmp_path / "fp32")
    assert np.allclose(fp32.score(tokens, cells, weighted=False), want, atol=1e-4)
    # the weighted score: Σ_t w(word_t) log p(word_t | ...), w per vocabulary id
    lp = fp32.token_logp(tokens, cells)
    assert lp.shape == (8, len(tokens) - 1)
    assert np.allclose(fp32.score(tokens, cells), lp @ fp32.weights[tokens[1:]], atol=1e-5)
    assert exact.with_name(exact.name + ".json").is_file() and exact.with_name(exact.name + ".sha256").is_file()
    # the shipped path: int8 graph, exported once and cached, loaded later without torch
    onnx_scorer = R.QueryScorer.for_captioner(tiny, cache_dir=tmp_path)
    assert R.scorer_path(tiny.version, tmp_path).is_file()
    again = R.QueryScorer.load(tiny.version, tmp_path)
    spread = float(want.max() - want.min())
    for sc in (onnx_scorer, again):
        got = sc.score(tokens, cells, weighted=False)
        assert np.abs(got - want).max() < 0.05 * spread
        assert np.corrcoef(got, want)[0, 1] > 0.999
    # from the stored (int8) cells too
    got = again.score(tokens, R.unpack_cells(R.pack_cells(cells)), weighted=False)
    assert np.corrcoef(got, want)[0, 1] > 0.999
    # a damaged cache file is ignored, not trusted
    R.scorer_path(tiny.version, tmp_path).write_bytes(b"garbage")
    assert R.QueryScorer.load(tiny.version, tmp_path) is None


def test_token_weights_favour_content_words(tiny):
    w = R.token_weights(tiny.vocab)
    ix = tiny.vocab.index
    assert w[ix["circle"]] > w[ix["on"]] > 0 and w[ix["red"]] > w[ix["a"]]
    assert w[tiny.vocab.eos] == 1.0 and w[tiny.vocab.pad] == w[tiny.vocab.bos] == w[tiny.vocab.unk] == 0.0


def test_scorer_tokens(tiny, tmp_path):
    sc = R.QueryScorer.from_torch(tiny)
    t = sc.tokens("A red circle!")
    assert t[0] == tiny.vocab.bos and t[-1] == tiny.vocab.eos and len(t) == 5
    assert sc.tokens("zebra xylophone") is None                       # no known word: nothing to score
    long = sc.tokens(" ".join(["red"] * 50))
    assert len(long) == tiny.config.max_len + 2


# ----------------------------------------------------------------------------- in the Library

@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory, tiny):
    base = tmp_path_factory.mktemp("rerank")
    ckpt = tiny.save(base / "tiny.pt")
    photos = base / "photos"
    photos.mkdir()
    make_set(photos, ["red_circle", "blue_square", "green_triangle", "stripes", "checker", "sky"] * 2)
    db = base / "library.db"
    with Library(db, model=ckpt, device="cpu") as lib:
        lib.index([photos], batch_size=4, workers=0, progress=False)
    return db, ckpt


def test_index_stores_cells_for_every_photo(tiny_library):
    db, _ = tiny_library
    with sqlite3.connect(db) as c:
        n_photos = c.execute("SELECT count(*) FROM photos WHERE error IS NULL").fetchone()[0]
        blobs = [b for (b,) in c.execute("SELECT data FROM photo_cells JOIN photos ON photos.id = photo_id")]
        versions = {v for (v,) in c.execute("SELECT DISTINCT model_version FROM photos")}
    assert n_photos == 12 and len(blobs) == 12
    assert R.unpack_cells(blobs).shape == (12, 49, 32)
    assert all(v.endswith("+cells") for v in versions)


def test_status_reports_reranking(tiny_library):
    db, ckpt = tiny_library
    with Library(db, model=ckpt, device="cpu") as lib:
        rr = lib.status()["reranking"]
        assert rr["photos"] == 12 and rr["scorer_cached"] and rr["checkpoint"].endswith("+cells")
    from imgsearch.model.captioner import Captioner

    with Library(db, captioner=Captioner.tiny(seed=9)) as lib:   # another checkpoint: nothing to re-rank
        assert lib.status()["reranking"]["photos"] == 0
    from typer.testing import CliRunner

    from imgsearch.cli import app

    r = CliRunner().invoke(app, ["status", "--db", str(db)])
    assert r.exit_code == 0 and "re-ranking" in r.stdout


def test_hybrid_query_is_reranked_by_the_likelihood(tiny_library):
    db, ckpt = tiny_library
    from imgsearch.search.settings import RERANK, rerank_weight

    with Library(db, model=ckpt, device="cpu") as lib:
        text = "a red circle on the grass"
        plain = lib.query(text, k=12, rerank=False)
        ranked = lib.query(text, k=12)
        scorer = lib.engine.scorer()
        assert scorer is not None
        ids = [h.id for h in plain]
        blobs = hot_reads.cells(lib.store, ids, scorer.version)
        assert set(blobs) == set(ids)
        ll = scorer.score(scorer.tokens(text), R.unpack_cells([blobs[i] for i in ids]))
        weights = lib.engine.signal_weights(text, lib.embedder().embed([text])[0], "hybrid")
        weight = rerank_weight(text, weights["labels"])        # the query's own re-ranking weight
        assert 0 < weight <= RERANK["weight"]
        want = R.rerank([(h.id, h.score) for h in plain], dict(zip(ids, ll.tolist())), RERANK["depth"], weight)
        assert [h.id for h in ranked] == [i for i, _ in want]
        # the engine scores its RERANK["depth"] candidates in one batch, this test the 12 hits: float32 sums of
        # another batch shape differ in the last digits on some CPUs (4e-5 on an AVX-512 Xeon)
        assert [h.score for h in ranked] == pytest.approx([s for _, s in want], rel=1e-5, abs=1e-4)
        # bm25/dense/image modes are single signals: never re-ranked
        assert [h.id for h in lib.query(text, k=12, mode="image")] == [h.id for h in lib.query(text, k=12, mode="image", rerank=False)]
        # a query with no word the decoder knows keeps the fused order
        assert [h.id for h in lib.query("xylophone zebra", k=5)] == [h.id for h in lib.query("xylophone zebra", k=5, rerank=False)]


def test_reranking_query_needs_no_torch(tiny_library):
    """The index run exported the scorer to the cache: a later query process loads it with onnxruntime."""
    db, ckpt = tiny_library
    code = textwrap.dedent(f"""
        import sys
        import imgsearch
        with imgsearch.Library({str(db)!r}, model={str(ckpt)!r}) as lib:
            assert lib.query("a red circle", k=3)
            assert lib.engine.scorer() is not None, "no re-ranking scorer"
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        assert not bad, bad[:5]
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


def test_library_of_another_model_is_not_reranked(tiny_library, tmp_path):
    """Cells written by another checkpoint are not scored by this one: the fused order stays."""
    db, _ = tiny_library
    from imgsearch.model.captioner import Captioner

    other = Captioner.tiny(seed=4)
    with Library(db, captioner=other) as lib:
        text = "a red circle"
        assert hot_reads.cells(lib.store, [1, 2, 3], other.version) == {}
        assert [h.id for h in lib.query(text, k=6)] == [h.id for h in lib.query(text, k=6, rerank=False)]


def test_checkpoint_version_is_remembered_by_path_size_and_mtime(tmp_path):
    import os

    from imgsearch.model.versions import DESCRIPTION_FORMAT, checkpoint_version

    ck, memo = tmp_path / "model.pt", tmp_path / "memo.json"
    ck.write_bytes(b"weights one")
    v1 = checkpoint_version(ck, memo)
    assert v1.startswith("model-") and v1.endswith(DESCRIPTION_FORMAT) and memo.is_file()
    assert checkpoint_version(ck, memo) == v1                       # from the memo
    ck.write_bytes(b"weights two!")                                # changed: hashed again
    v2 = checkpoint_version(ck, memo)
    assert v2 != v1
    st = ck.stat()
    ck.write_bytes(b"weights 3rd!")                                # same size, mtime forced back: the memo answers
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert checkpoint_version(ck, memo) == v2
    memo.write_text("{ not json")                                  # a damaged memo is ignored (and rewritten)
    assert checkpoint_version(ck, memo) != v2
    assert checkpoint_version(ck, tmp_path / "no" / "such" / "dir" / "memo.json") == checkpoint_version(ck, memo)


def test_damaged_cells_never_fail_a_query(tiny_library, tmp_path, caplog):
    """A truncated cell blob (disk damage, a bad copy) costs the re-ranking of that query, not the query."""
    import shutil

    db, ckpt = tiny_library
    copy = tmp_path / "library.db"
    shutil.copy(db, copy)
    with sqlite3.connect(copy) as c:
        pid = c.execute("SELECT photo_id FROM photo_cells LIMIT 1").fetchone()[0]
        c.execute("UPDATE photo_cells SET data = substr(data, 1, 100) WHERE photo_id = ?", (pid,))
    with Library(copy, model=ckpt, device="cpu") as lib:
        with caplog.at_level("WARNING"):
            hits = lib.query("a red circle", k=12)
        assert [h.id for h in hits] == [h.id for h in lib.query("a red circle", k=12, rerank=False)]
        assert "re-ranking skipped" in caplog.text


def test_lstm_captioner_has_no_reranker(tmp_path):
    """Only the Transformer decoder can score stored cells: an LSTM checkpoint indexes and queries without."""
    from imgsearch.model.captioner import Captioner
    from imgsearch.model.decoder import DecoderConfig, build_decoder

    tiny = Captioner.tiny(seed=6)
    cfg = DecoderConfig(kind="lstm", vocab_size=len(tiny.vocab), d_model=16, hidden=32, dropout=0.0, max_len=8)
    lstm = Captioner(tiny.encoder, build_decoder(cfg).eval(), tiny.vocab, cfg, version="lstm-test")
    assert not R.supports(lstm) and R.QueryScorer.for_captioner(lstm, cache_dir=tmp_path) is None
    photos = tmp_path / "p"
    make_set(photos, ["red_circle", "sky", "checker"])
    with Library(tmp_path / "lib.db", captioner=lstm) as lib:
        lib.index([photos], workers=0, progress=False)
        with sqlite3.connect(tmp_path / "lib.db") as c:
            assert c.execute("SELECT count(*) FROM photo_cells").fetchone()[0] == 0
        assert lib.engine.scorer() is None
        assert [h.id for h in lib.query("a red circle", k=3)] == [h.id for h in lib.query("a red circle", k=3, rerank=False)]
