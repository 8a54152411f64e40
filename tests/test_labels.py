"""imgsearch/model/labels.py: the per-cell classifier, packing, label vectors and region tags."""
from __future__ import annotations

import numpy as np
import pytest

from imgsearch.model import labels


def test_cell_maximum_finds_a_class_one_cell_shows():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1000, 1280)).astype(np.float32) * 0.01
    bias = np.zeros(1000, np.float32)
    head = rng.normal(size=(2, 49, 1280)).astype(np.float32) * 0.1
    head[0, 17] += weight[123] * 4000        # one cell of photo 0 shows class 123 strongly
    p = labels.cell_probs(head, weight, bias)                     # (2, 1000)
    assert p.shape == (2, 1000) and p.dtype == np.float32
    assert int(np.argmax(p[0])) == 123 and p[0, 123] > 0.99
    mean_cell = head.mean(axis=1) @ weight.T + bias               # the photo-level classifier averages it away
    glob = np.exp(mean_cell - mean_cell.max(1, keepdims=True))
    glob /= glob.sum(1, keepdims=True)
    assert glob[0, 123] < p[0, 123]
    assert p[1, 123] < 0.5


def test_top_labels_pack_and_unpack_round_trip():
    probs = np.linspace(0, 1, 1000, dtype=np.float32)[None].repeat(2, 0)
    probs[1] = probs[1][::-1]
    ids, p = labels.top_labels(probs)
    assert ids.shape == (2, labels.TOP) and ids[0, 0] == 999 and ids[1, 0] == 0
    assert np.all(np.diff(p, axis=1) <= 0)
    blob = labels.pack(ids[0], p[0])
    assert len(blob) == 4 + 4 * labels.TOP
    back_ids, back_p = labels.unpack(blob)
    assert back_ids.tolist() == ids[0].tolist() and np.allclose(back_p, p[0], atol=1e-3)
    with pytest.raises(ValueError):
        labels.unpack(blob[:-1])
    with pytest.raises(ValueError):
        labels.unpack(b"XX" + blob[2:])


def test_label_vector_is_the_weighted_mean_of_class_texts():
    cv = labels.class_vectors()
    assert cv.shape == (1000, 384) and np.allclose(np.linalg.norm(cv, axis=1), 1, atol=1e-3)
    ids = np.array([[967, 504]])                  # espresso, coffee mug
    v = labels.label_vectors(ids, np.array([[0.75, 0.25]], np.float32))[0]
    want = 0.75 * cv[967] + 0.25 * cv[504]
    assert np.allclose(v, want / np.linalg.norm(want), atol=1e-5)
    assert labels.query_affinity(cv[967]) == pytest.approx(1.0, abs=1e-3)


def test_region_tags_need_a_sure_class_and_bring_its_hypernyms():
    from imgsearch.model.tags import load_tag_table

    names = load_tag_table().names
    ids = np.array([207, 967, 504])                           # golden retriever, espresso, coffee mug
    tags = dict(labels.region_tags(ids, np.array([0.9995, 0.9991, 0.5], np.float32)))
    assert names[207] in tags and "dog" in tags and names[967] in tags
    assert names[504] not in tags                             # not sure enough
    assert labels.region_tags(ids, np.array([0.5, 0.4, 0.3], np.float32)) == []
