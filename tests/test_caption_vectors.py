"""The caption vector of a photo: mean of its n-best caption embeddings plus weighted tag embedding."""
import numpy as np
import pytest

from imgsearch.text.caption_vectors import N_BEST, TAG_WEIGHT, caption_vectors
from imgsearch.text.embed import TextEmbedder


@pytest.fixture(scope="module")
def emb():
    return TextEmbedder.load()


def _unit(v):
    return v / np.linalg.norm(v)


def test_mean_of_nbest_plus_tags(emb):
    caps = ["a dog runs on the beach", "a brown dog on the sand", "a dog plays in the water", "a cat sleeps"]
    tags = ["golden retriever", "dog", "seashore"]
    got = caption_vectors(emb, [caps], [tags])[0]
    e = emb.embed(caps[:N_BEST] + [" ".join(tags)])
    want = _unit(e[:N_BEST].mean(0) + TAG_WEIGHT * e[N_BEST])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert abs(np.linalg.norm(got) - 1) < 1e-5
    # the 4th caption is beyond the n-best and must not count
    np.testing.assert_allclose(got, caption_vectors(emb, [caps[:3] + ["a red car"]], [tags])[0], atol=1e-6)


def test_batch_equals_one_at_a_time_and_edge_cases(emb):
    caps = [["a man rides a bike"], [], ["two children play", "kids on grass"], [""]]
    tags = [[], ["dog"], ["swing"], []]
    batch = caption_vectors(emb, caps, tags)
    assert batch.shape == (4, 384) and np.isfinite(batch).all()
    for i in range(4):
        np.testing.assert_allclose(batch[i], caption_vectors(emb, [caps[i]], [tags[i]])[0], atol=1e-5)
    np.testing.assert_allclose(batch[0], emb.embed(["a man rides a bike"])[0], atol=1e-5)   # no tags: the caption
    assert caption_vectors(emb, [], []).shape == (0, 384)
    twice = caption_vectors(emb, [caps[2], caps[2], caps[0]], [tags[2], tags[2], tags[0]])   # repeated texts
    np.testing.assert_allclose(twice, batch[[2, 2, 0]], atol=1e-5)
    with pytest.raises(ValueError):
        caption_vectors(emb, [["a"]], [])


def test_tags_pull_the_vector_toward_their_words(emb):
    q = emb.embed(["a dog"])[0]
    plain = caption_vectors(emb, [["an animal on the grass"]], [[]])[0]
    tagged = caption_vectors(emb, [["an animal on the grass"]], [["dog", "golden retriever"]])[0]
    assert tagged @ q > plain @ q + 0.05
