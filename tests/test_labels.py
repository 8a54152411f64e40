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
    tags = dict(labels.region_tags(ids, np.array([0.9, 0.6, 0.3], np.float32)))
    assert names[207] in tags and "dog" in tags and names[967] in tags
    assert tags["dog"] == pytest.approx(0.9) and tags[names[967]] == pytest.approx(0.6)
    assert names[504] not in tags                             # not sure enough
    assert labels.region_tags(ids, np.array([0.45, 0.4, 0.3], np.float32)) == []
    assert len(dict(labels.region_tags(ids, np.array([0.9, 0.8, 0.7], np.float32), top=1))) == 7   # one class


# ---------------------------------------------------------------------------- in a library

def _library(tmp_path):
    from imgsearch import Library
    from imgsearch.model.projection import ProjectionConfig, build_projection
    from libtools import make_set, tiny_captioner

    if not (tmp_path / "pics").exists():
        make_set(tmp_path / "pics", ["red_circle", "blue_square", "sky", "checker"], "p")
    import torch

    cap = tiny_captioner(0)
    torch.manual_seed(0)   # the same weights (so the same model version) each time the library is opened
    cap.projection = build_projection(ProjectionConfig(hidden=64, attn_dim=32)).eval()   # every signal present
    return Library(tmp_path / "library.db", captioner=cap)


def test_label_weight_follows_what_the_query_is_about(tmp_path):
    """A query about one of ImageNet's things weighs the label signal; one about people and actions does not."""
    from imgsearch.search.settings import FUSION, label_weight

    with _library(tmp_path) as lib:
        emb = lib.embedder()
        w = {q: lib.engine.signal_weights(q, emb.embed([q])[0], "hybrid")["labels"]
             for q in ("an espresso in a cup", "a man in a red shirt climbs a rock")}
        assert w["an espresso in a cup"] > w["a man in a red shirt climbs a rock"]
        assert w["a man in a red shirt climbs a rock"] < FUSION["labels"]["weight"] / 2
        assert "labels" not in lib.engine.signal_weights("x", emb.embed(["x"])[0], "image")
    assert label_weight(0.0) == 0.0 and label_weight(1.0) == FUSION["labels"]["weight"]


def test_old_photos_without_labels_search_and_are_labelled_by_the_next_run(tmp_path):
    """Photos described before the label signal: every mode still finds them (the label list simply lacks
    them); the next index run labels them without re-captioning, then --mode labels finds them too."""
    import sqlite3

    from imgsearch.search.settings import MODES

    db = tmp_path / "library.db"
    with _library(tmp_path) as lib:
        lib.index([tmp_path / "pics"], workers=0, progress=None)
        with sqlite3.connect(db) as c:   # as a library of schema 0004 upgraded in place has them
            c.execute("UPDATE photos SET labels = NULL, label_embedding = NULL, labels_version = NULL")
            # no region terms: each photo's packed terms less its 'region' ones
            c.execute("UPDATE photo_terms SET terms = (SELECT json_group_array(json(value)) FROM json_each(terms) "
                      "WHERE json_extract(value, '$[0]') != 'region')")
            c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
        assert lib.query("a red circle", k=4, mode="labels") == []
        for mode in MODES:
            if mode not in ("labels", "text"):   # "text": the text read in photos (OCR), none here
                assert lib.query("a red circle", k=4, mode=mode, min_score=0), mode
        report = lib.index([tmp_path / "pics"], workers=0, progress=None)
        assert (report.labelled, report.added, report.updated) == (4, 0, 0)
        for mode in MODES:
            hits = lib.query("a red circle", k=4, mode=mode, min_score=0)
            assert hits or mode == "text", mode
        assert len(lib.query("a red circle", k=10, mode="labels", min_score=0)) == 4
        assert lib.index([tmp_path / "pics"], workers=0, progress=None).labelled == 0   # done once


def test_schema_0004_library_upgrades_and_gets_labels(tmp_path):
    """A real library of the previous schema (0004): opened, migrated (labels columns, region tag kind), and
    the next run labels its photos."""
    import sqlite3

    from alembic import command

    from imgsearch.store.db import alembic_config, current_revision, head_revision, make_engine

    db = tmp_path / "library.db"
    with _library(tmp_path) as lib:
        lib.index([tmp_path / "pics"], workers=0, progress=None)
    engine = make_engine(db)
    with engine.connect() as conn:     # down to the schema before this feature: the label columns go
        command.downgrade(alembic_config(conn), "0004")
        if conn.in_transaction():
            conn.commit()
    assert current_revision(engine) == "0004"
    engine.dispose()
    with sqlite3.connect(db) as c:
        assert "labels" not in {r[1] for r in c.execute("PRAGMA table_info(photos)")}
        tags_before = c.execute("SELECT photo_id, kind, term FROM tags ORDER BY photo_id, rowid").fetchall()
    with _library(tmp_path) as lib:
        assert current_revision(lib.store.engine) == head_revision()
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT photo_id, kind, term FROM tags ORDER BY photo_id, pos").fetchall() == tags_before
            assert c.execute("SELECT count(*) FROM photos WHERE labels IS NULL").fetchone()[0] == 4
        assert lib.index([tmp_path / "pics"], workers=0, progress=None).labelled == 4
        assert len(lib.query("a blue square", k=10, mode="labels", min_score=0)) == 4
        with sqlite3.connect(db) as c:                  # the same pass gave them their visual vectors
            assert c.execute("SELECT count(*) FROM photos WHERE visual_embedding IS NULL").fetchone()[0] == 0
        assert len(lib.engine.dense_search("visual", lib.engine.photo_vectors(1)["visual"], 10)) == 4


def test_hybrid_fuses_four_signals_and_rerank_weight_follows_the_query(tmp_path):
    from imgsearch.search.settings import RERANK, rerank_weight

    with _library(tmp_path) as lib:
        lib.index([tmp_path / "pics"], workers=0, progress=None)
        q = "a red circle on a white background"
        lists = lib.ranked_lists(q, lib.embedder().embed([q])[0], "hybrid", 10)
        assert set(lists) == {"bm25", "caption", "image", "labels"}
    # one content word: never re-ranked (the captioner's likelihood of one word says little)
    assert rerank_weight("umbrella", 0.0) == 0.0 and rerank_weight("the umbrella", 0.0) == 0.0
    assert rerank_weight("a man climbs a rock", 0.0) == RERANK["weight"]
    assert 0 < rerank_weight("a man climbs a rock", 1.0) < RERANK["weight"]   # a query about things: less


def test_like_queries_use_every_stored_vector_and_compute_them_for_a_new_photo(tmp_path):
    from PIL import Image

    from imgsearch.search.settings import FUSION

    with _library(tmp_path) as lib:
        lib.index([tmp_path / "pics"], workers=0, progress=None)
        stored = lib.engine.photo_vectors(tmp_path / "pics" / "p0_red_circle.jpg")
        assert set(stored) == {"caption", "image", "labels", "visual"}
        crop = tmp_path / "crop.jpg"
        with Image.open(tmp_path / "pics" / "p0_red_circle.jpg") as im:
            im.crop((20, 20, im.width - 40, im.height - 30)).save(crop)
        fresh = lib.engine.photo_vectors(crop)                  # not indexed: described now
        assert set(fresh) == {"caption", "image", "labels", "visual"}
        assert all(v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-3 for v in fresh.values())
        assert FUSION["like_weights"]["labels"] > 0 and FUSION["like_weights"]["visual"] > 0
        original = lib.engine.photo_vectors(tmp_path / "pics" / "p0_red_circle.jpg")
        with lib.store.session() as s:
            from sqlalchemy import select

            from imgsearch.store.models import Photo
            want = s.execute(select(Photo.id).where(Photo.path == str(tmp_path / "pics" / "p0_red_circle.jpg"))).scalar()
        by_look = lib.engine.dense_search("visual", fresh["visual"], 4)    # the crop looks most like its photo
        assert by_look[0][0] == want and by_look[0][1] > 0.9
        assert float(original["visual"] @ fresh["visual"]) == pytest.approx(by_look[0][1], abs=1e-5)
        hits = lib.query(like=crop, k=4)
        assert len(hits) == 4 and hits[0].score >= hits[-1].score


def test_visual_vectors_pool_project_and_stay_the_same_across_processes():
    from imgsearch.model import visual

    r = visual.projection()
    assert r.shape == (1280, 384) and r.dtype == np.float32 and not r.flags.writeable
    # RandomState's stream is frozen by NumPy: the same matrix in every process and version (a change would
    # silently break every stored visual vector, so this pins it)
    assert np.allclose(r[0, :3] * np.sqrt(384), [-0.11005826, -0.65631918, 0.21533978], atol=1e-6)
    rng = np.random.default_rng(1)
    head = np.abs(rng.normal(size=(3, 49, 1280))).astype(np.float32)
    head[2] = head[0][::-1] * 7.0                 # the same cells in another order, brighter: the same look
    v = visual.visual_vectors(head)
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[2]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < float(v[0] @ v[2])
