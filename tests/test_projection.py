"""The photo→text projection learns to put a photo next to the captions that describe it."""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch

from imgsearch.model.encoder import load_encoder
from imgsearch.model.preprocess import to_tensor
from imgsearch.model.projection import ProjectionConfig, contrastive_loss, recall_at_k, train_projection
from imgsearch.text.embed import TextEmbedder
from shapes import COLOURS, SHAPES, draw


def test_projection_retrieves_drawn_shapes_by_caption():
    torch.manual_seed(0)
    rng = random.Random(1)
    combos = list(itertools.product(COLOURS, SHAPES))                 # 12 distinct scenes
    train = [(c, s) for c, s in combos for _ in range(6)]
    test = combos                                                      # fresh drawings, new positions and sizes
    enc = load_encoder("lite0")
    with torch.inference_mode():
        def grids(items):
            return torch.cat([enc(torch.stack([to_tensor(draw(c, s, rng)) for c, s in items[i:i + 24]]))[0]
                              for i in range(0, len(items), 24)]).numpy()
        g_train, g_test = grids(train), grids(test)
    emb = TextEmbedder.load()
    def caps(items):
        texts = [[f"a {c} {s}", f"a {s} coloured {c}", f"there is a {c} {s} on a white background"] for c, s in items]
        return emb.embed([t for ts in texts for t in ts]).reshape(len(items), 3, -1)
    t_train, t_test = caps(train), caps(test)
    cfg = ProjectionConfig(hidden=128, dropout=0.1, feature_dropout=0.0)
    model, report = train_projection(g_train, t_train, g_test, t_test, cfg, epochs=25, batch_size=24, lr=3e-3,
                                     patience=25, hflip=True, log=lambda m: None)
    with torch.no_grad():
        z = torch.nn.functional.normalize(model(torch.from_numpy(g_test)), dim=-1).numpy()
    r = recall_at_k(z, t_test.reshape(-1, t_test.shape[-1]), np.repeat(np.arange(len(test)), 3))
    # chance: R@1 = 1/12 ≈ 0.08, R@5 ≈ 0.42
    assert r["R@1"] >= 0.5, r
    assert r["R@5"] >= 0.9, r


def test_contrastive_loss_prefers_matching_pairs():
    img = torch.nn.functional.normalize(torch.eye(4)[:, :8].float() + 0.01, dim=-1)
    txt = img.repeat_interleave(2, 0)                                 # two captions per image, exact matches
    owner = torch.arange(4).repeat_interleave(2)
    good = contrastive_loss(img, txt, owner, torch.tensor(10.0))
    bad = contrastive_loss(img, txt, owner.roll(2), torch.tensor(10.0))
    assert good < bad


def test_stochastic_weight_averaging_returns_the_mean_of_the_epoch_weights():
    """swa_from=k: all epochs run, the model is the mean of the weights after epochs k..end."""
    rng = np.random.default_rng(0)
    n, cells, ch = 48, 4, 16
    owner_feat = rng.normal(size=(n, 1, ch)).astype(np.float32)
    grid = (owner_feat + 0.1 * rng.normal(size=(n, cells, ch))).astype(np.float32)
    text = np.repeat(owner_feat[:, :, :8], 2, axis=1) + 0.05 * rng.normal(size=(n, 2, 8)).astype(np.float32)
    cfg = ProjectionConfig(feat_dim=ch, out_dim=8, hidden=16, attn_queries=1, attn_dim=8, dropout=0.0,
                           feature_dropout=0.0)
    snaps = []

    def run(swa_from):
        import imgsearch.model.projection as P

        seen = []
        orig = P.recall_at_k

        def spy(*a, **k):                                  # called once per epoch, right after model.eval()
            seen.append({name: v.clone() for name, v in spy.model.state_dict().items()})
            return orig(*a, **k)

        orig_init = P.PhotoProjection.__init__

        def init(self, c):
            orig_init(self, c)
            spy.model = self

        P.recall_at_k, P.PhotoProjection.__init__ = spy, init
        try:
            model, report = P.train_projection(grid, text, grid[:12], text[:12], cfg, epochs=4, batch_size=16,
                                               lr=1e-2, seed=3, hflip=False, swa_from=swa_from, log=lambda m: None)
        finally:
            P.recall_at_k, P.PhotoProjection.__init__ = orig, orig_init
        return model, report, seen[:4]

    model, report, snaps = run(swa_from=2)
    assert len(report["history"]) == 5 and report["best"]["epoch"] == "SWA 2-4"
    for name, v in model.state_dict().items():
        want = torch.stack([s[name].double() for s in snaps[1:]]).mean(0)
        assert torch.allclose(v.double(), want, atol=1e-6), name
    # the averaged weights differ from the last epoch's (the average is not a no-op)
    assert not torch.allclose(model.state_dict()["mlp.0.weight"], snaps[-1]["mlp.0.weight"])
