"""The model commands: train, caption, evaluate, evaluate-retrieval."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from imgsearch import cli_output
from imgsearch.devices import DEVICE_HELP
from imgsearch.errors import UserError
from imgsearch.cli.common import JsonOpt, check_device, app, progress_bar, user_errors

# ---------------------------------------------------------------------------- model commands

def _train_defaults():
    from imgsearch.model.config import TrainConfig   # torch-free: `imgsearch query` must not import torch

    return TrainConfig()


_T = _train_defaults()


@app.command()
@user_errors
def train(
    captions: Annotated[Path, typer.Option(help="COCO-style caption JSON of the training split.", exists=True,
                                           dir_okay=False, show_default=False)],
    images: Annotated[Path, typer.Option(help="Folder with the training images.", exists=True, file_okay=False,
                                         show_default=False)],
    dev_captions: Annotated[Optional[Path], typer.Option(help="Dev split for model selection and early stopping.",
                                                         exists=True, dir_okay=False)] = None,
    dev_images: Annotated[Optional[Path], typer.Option(help="Folder with the dev images [default: --images].",
                                                       exists=True, file_okay=False)] = None,
    out: Annotated[Path, typer.Option(help="Checkpoint folder (best.pt, last.pt, history.json).")] = Path(_T.out),
    cache: Annotated[Optional[Path], typer.Option(help="Feature cache folder [default: OUT/features].")] = None,
    part: Annotated[str, typer.Option(help="captioner | projection | all (the photo→text projection trains on "
                                           "the same cached features).")] = "all",
    kind: Annotated[str, typer.Option(help="Decoder: transformer | lstm.")] = _T.kind,
    embed_size: Annotated[int, typer.Option(help="Embedding (model) size.")] = _T.embed_size,
    hidden_size: Annotated[int, typer.Option(help="Feed-forward width (transformer) or LSTM hidden size.")] = _T.hidden_size,
    layers: Annotated[int, typer.Option(help="Decoder layers.")] = _T.layers,
    heads: Annotated[int, typer.Option(help="Attention heads (transformer).")] = _T.heads,
    dropout: Annotated[float, typer.Option(help="Dropout.")] = _T.dropout,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine decay).")] = _T.lr,
    teacher_forcing: Annotated[float, typer.Option(help="Probability of feeding the reference word "
                                                        "(1.0 = pure teacher forcing).")] = _T.teacher_forcing,
    batch_size: Annotated[int, typer.Option(help="Images per step (each with all its captions).")] = _T.batch_size,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = _T.epochs,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better dev CIDEr.")] = _T.patience,
    max_len: Annotated[int, typer.Option(help="Maximum caption length in words.")] = _T.max_len,
    min_count: Annotated[int, typer.Option(help="Minimum word count for the vocabulary.")] = _T.min_count,
    seed: Annotated[int, typer.Option(help="Random seed.")] = _T.seed,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (mixed precision on cuda).")] = "auto",
    scst_epochs: Annotated[int, typer.Option(help="CIDEr-D fine-tuning epochs after cross-entropy "
                                                  "(self-critical, beam candidates; needs --dev-captions).")] = _T.scst_epochs,
    scst_lr: Annotated[float, typer.Option(help="Learning rate of the CIDEr-D fine-tuning.")] = _T.scst_lr,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    export: Annotated[Optional[Path], typer.Option(help="Also write the best model as one fp16 checkpoint here "
                                                        "(what `imgsearch index --model` and the package load).")] = None,
):
    """Train the caption decoder (and the photo→text projection) on COCO-style captions."""

    from imgsearch.model.config import ProjectionTrainConfig, TrainConfig
    from imgsearch.model.train import export_checkpoint, train as run_train
    from imgsearch.model.train import train_projection_head

    if part not in ("captioner", "projection", "all"):
        raise UserError("--part must be captioner, projection or all")
    device = check_device(device)
    common = dict(captions=str(captions), images=str(images), dev_captions=str(dev_captions) if dev_captions else None,
                  dev_images=str(dev_images) if dev_images else None, out=str(out), cache=str(cache) if cache else None)
    result: dict = {}
    if part in ("captioner", "all"):
        cfg = TrainConfig(**common, kind=kind, embed_size=embed_size, hidden_size=hidden_size, layers=layers,
                          heads=heads, dropout=dropout, lr=lr, teacher_forcing=teacher_forcing, batch_size=batch_size,
                          epochs=epochs, patience=patience, max_len=max_len, min_count=min_count, seed=seed,
                          device=device, resume=resume, scst_epochs=scst_epochs, scst_lr=scst_lr)
        result["captioner"] = run_train(cfg)
    if part in ("projection", "all"):
        _, report = train_projection_head(ProjectionTrainConfig(**common, seed=seed))
        result["projection"] = report["best"]
    if export:
        result["exported"] = str(export_checkpoint(out, export))
    typer.echo(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))


@app.command()
@user_errors
def caption(
    paths: Annotated[List[Path], typer.Argument(metavar="PATH", help="Photos or folders.", show_default=False)],
    beam: Annotated[int, typer.Option(min=1, help="Beam size.")] = 3,
    n_best: Annotated[int, typer.Option(min=1, help="Captions to keep per photo.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per model batch.")] = 32,
    device: Annotated[str, typer.Option(metavar="DEVICE", help=DEVICE_HELP)] = "auto",
    model: Annotated[Optional[Path], typer.Option(help="Captioner checkpoint [default: the shipped one].",
                                                  exists=True, dir_okay=False)] = None,
    json_out: JsonOpt = False,
):
    """Caption photos without indexing them: a table on a terminal, "path<TAB>caption<TAB>tags" lines in a pipe,
    --json for everything else. Exits 1 when a photo could not be captioned (the others are printed)."""
    from imgsearch.captioning import caption_files
    from imgsearch.model.captioner import Captioner

    for p in paths:
        if not p.exists():
            raise UserError(f"no such file or folder: {p}")
    cap = Captioner.load(model, device=check_device(device))
    results = caption_files(paths, captioner=cap, beam=beam, n_best=n_best, batch_size=batch_size)
    if json_out:
        cli_output.print_json([r.to_dict() for r in results])
    elif not sys.stdout.isatty():  # piped: "path<TAB>caption<TAB>tags" per photo; failures on stderr
        cli_output.print_caption_lines(results)
    else:
        cli_output.print_captions(results)
    failed = [r for r in results if r.error]
    if failed:  # every photo that could be captioned is printed above; the run still fails
        raise UserError(f"could not caption {len(failed)} of {len(results)} photo{'s' if len(results) != 1 else ''}"
                        f" (e.g. {failed[0].path}: {failed[0].error})")


@app.command()
@user_errors
def evaluate(
    captions: Annotated[Path, typer.Option(help="COCO-style caption JSON with the reference captions.", exists=True,
                                           dir_okay=False, show_default=False)],
    images: Annotated[Path, typer.Option(help="Folder with its images.", exists=True, file_okay=False,
                                         show_default=False)],
    beam: Annotated[int, typer.Option(min=1, help="Beam size.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N images.")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help=DEVICE_HELP)] = "auto",
    model: Annotated[Optional[Path], typer.Option(help="Captioner checkpoint [default: the shipped one].",
                                                  exists=True, dir_okay=False)] = None,
    json_out: JsonOpt = False,
):
    """Caption quality: corpus BLEU-1..4 and CIDEr as the COCO caption evaluation computes them."""
    from imgsearch.model.captioner import Captioner
    from imgsearch.model.evaluate import evaluate_captions

    res = evaluate_captions(captions, images, Captioner.load(model, device=check_device(device)), beam=beam,
                            batch_size=batch_size, limit=limit)
    if json_out:
        print(json.dumps(res, ensure_ascii=False))
        return
    typer.echo(f"{res['images']} images, beam {res['beam']}, model {res['model']} ({res['images_per_s']} images/s)")
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"):
        typer.echo(f"{key:7s} {res[key]:.4f}")


@app.command("evaluate-retrieval")
@user_errors
def evaluate_retrieval(
    captions: Annotated[Path, typer.Option(help="COCO-style caption JSON; every caption is used as a query.",
                                           exists=True, dir_okay=False, show_default=False)],
    images: Annotated[Path, typer.Option(help="Folder with its images.", exists=True, file_okay=False,
                                         show_default=False)],
    mode: Annotated[Optional[List[str]], typer.Option(help="Search modes to score (repeat) [default: all].")] = None,
    library: Annotated[Optional[Path], typer.Option(help="Keep the evaluation library here [default: temporary].")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N images.")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help=DEVICE_HELP)] = "auto",
    json_out: JsonOpt = False,
):
    """Text→image Recall@1/5/10 and median rank of the library's search, per mode."""
    from imgsearch.search.settings import MODES
    from imgsearch.retrieval import evaluate_retrieval as run

    device = check_device(device)
    bar = contextlib.nullcontext() if json_out else progress_bar()
    with bar as progress:
        res = run(captions, images, modes=tuple(mode or MODES), library=library, limit=limit, device=device,
                  progress=progress)
    if json_out:
        print(json.dumps(res, ensure_ascii=False))
        return
    cli_output.print_retrieval(res)
