"""CIDEr-D fine-tuning parts: the reward equals pycocoevalcap's CIDEr-D; log-probabilities and samples are right."""
import torch

from imgsearch.model.decoder import DecoderConfig, build_decoder
from imgsearch.model.metrics import corpus_scores
from imgsearch.model.scst import CiderD, sample_captions, sequence_logprob

REFS = [["a dog runs on the beach", "a brown dog running on sand", "dog at the sea shore"],
        ["two children play in a park", "kids playing on the grass", "two kids on a lawn"],
        ["a man rides a bike down the street", "a cyclist on a city road", "man on a bicycle"],
        ["a red car parked on the street", "a red vehicle by the road", "car parked outside"]]
HYPS = ["a dog runs on the sand", "children playing in the park", "a man on a bike", "a blue car on a road"]


def test_cider_d_matches_pycocoevalcap():
    c = CiderD(REFS)
    mine = sum(c.score(h, i) for i, h in enumerate(HYPS)) / len(HYPS)
    ref = corpus_scores(dict(enumerate(HYPS)), dict(enumerate(REFS)))["CIDEr"]
    assert abs(mine - ref) < 1e-9
    assert c.score("a dog runs on the beach", 0) > c.score("a red car parked", 0)


def test_sequence_logprob_and_samples():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=12, feat_dim=8, n_cells=4, d_model=16, hidden=32, n_layers=1, n_heads=2,
                        dropout=0.0, max_len=6)
    dec = build_decoder(cfg).eval()
    grid = torch.randn(3, 4, 8)
    mem = dec.encode_memory(grid)
    seqs = sample_captions(dec, mem, 3, bos=1, eos=2, max_len=6, banned=(0, 1, 3),
                           generator=torch.Generator().manual_seed(1))
    for row in seqs.tolist():
        words = row[:row.index(2)] if 2 in row else row
        assert 2 in row and len(words) >= 1 and not set(words) & {0, 1, 3}
        assert all(t == 0 for t in row[row.index(2) + 1:])
    lp = sequence_logprob(dec, mem, seqs, bos=1, pad=0)
    # the same sum from incremental decoding, one token at a time
    state, prev, want = dec.start(mem), torch.full((3,), 1), torch.zeros(3)
    for t in range(seqs.shape[1]):
        logp, state = dec.step(state, prev)
        tok = seqs[:, t]
        want += torch.where(tok != 0, logp.gather(1, tok[:, None]).squeeze(1), torch.zeros(3))
        prev = tok
    assert torch.allclose(lp, want, atol=1e-4)
