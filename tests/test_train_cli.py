"""`imgsearch train` end to end on a tiny COCO-style set: features → decoder → projection → export → load."""
from __future__ import annotations

import itertools
import json
import random

from typer.testing import CliRunner

from imgsearch.cli import app
from shapes import COLOURS, SHAPES, draw


def _coco(folder, items, name):
    images, anns = [], []
    for i, (colour, shape, file) in enumerate(items, 1):
        images.append({"id": i, "file_name": file})
        anns += [{"id": len(anns) + 1, "image_id": i, "caption": f"A {colour} {shape}."},
                 {"id": len(anns) + 2, "image_id": i, "caption": f"a {shape} painted {colour}"}]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def test_train_cli_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    rng = random.Random(0)
    imgs = tmp_path / "images"
    imgs.mkdir()
    items = []
    for n, (colour, shape) in enumerate(itertools.product(COLOURS, SHAPES)):
        file = f"{n:02d}_{colour}_{shape}.jpg"
        draw(colour, shape, rng).save(imgs / file)
        items.append((colour, shape, file))
    train = _coco(tmp_path, items[:9], "train.json")
    dev = _coco(tmp_path, items[9:], "dev.json")
    out, export = tmp_path / "run", tmp_path / "model.pt"
    args = ["train", "--captions", str(train), "--images", str(imgs), "--dev-captions", str(dev), "--out", str(out),
            "--embed-size", "32", "--hidden-size", "64", "--layers", "1", "--heads", "2", "--epochs", "2",
            "--batch-size", "4", "--min-count", "1", "--device", "cpu", "--scst-epochs", "1", "--scst-lr", "1e-4",
            "--export", str(export)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "best.pt").exists() and (out / "last.pt").exists() and (out / "projection.pt").exists()
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all("CIDEr" in h for h in history)
    scst = json.loads((out / "scst_history.json").read_text())        # start (epoch 0) + one CIDEr-D epoch
    assert [h["epoch"] for h in scst] == [0, 1] and (out / "best_xe.pt").exists() and (out / "scst" / "scst_last.pt").exists()
    assert "train_reward" in scst[1] and 0 <= scst[1]["CIDEr"]

    from imgsearch.model.captioner import Captioner

    cap = Captioner.load(export, device="cpu")
    assert cap.projection is not None and cap.config.d_model == 32
    assert set(cap.vocab.words) >= {"red", "circle", "painted"}

    # --resume after the last epoch has nothing left to do and keeps the history
    res = CliRunner().invoke(app, args[:-2] + ["--part", "captioner", "--resume"])
    assert res.exit_code == 0, res.output
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
