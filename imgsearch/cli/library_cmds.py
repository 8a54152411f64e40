"""The library commands: index (local or on a Ray cluster), ingest, status, forget, prune."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from imgsearch import cli_output
from imgsearch.devices import DEVICE_HELP
from imgsearch.errors import UserError
from imgsearch.cli.common import DbOpt, JsonOpt, check_device, open_library, app, progress_bar, sigterm_as_interrupt, user_errors

# ---------------------------------------------------------------------------- index

@app.command()
@user_errors
def index(
    paths: Annotated[List[Path], typer.Argument(metavar="PATH", help="Folders (or single photos) to index, recursively.",
                                                show_default=False)],
    db: DbOpt = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help=DEVICE_HELP)] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Photos per batch (and per transaction).")] = 32,
    workers: Annotated[Optional[int], typer.Option(
        min=0, help="Decoding processes (default: min(4, CPUs)); 0 = decode in this process.",
        show_default=False)] = None,
    beam: Annotated[int, typer.Option(min=1, help="Beam width for captioning.")] = 3,
    model: Annotated[Optional[Path], typer.Option(help="Captioner checkpoint (default: the shipped one).",
                                                  show_default=False)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed",
                                               help="Retry files that failed before even if unchanged.")] = False,
    prune_empty: Annotated[bool, typer.Option("--prune-empty",
                                              help="Drop the photos of a folder that is now empty "
                                                   "(by default they are kept: unmounted drive?).")] = False,
    verify: Annotated[bool, typer.Option("--verify",
                                         help="Re-hash every file, even when its size and mtime are unchanged, "
                                              "and re-describe those whose content changed.")] = False,
    ocr: Annotated[Optional[bool], typer.Option(
        "--ocr/--no-ocr", help="Read the text inside photos (screenshots, signs, receipts) and make it searchable, "
                               "photos indexed before too (no re-captioning); remembered by the library. Costs "
                               "about 1 s of CPU a photo with text. Needs: pip install 'imgsearch[ocr]'.",
        show_default=False)] = None,
    engine: Annotated[str, typer.Option("--engine", metavar="ENGINE",
                                        help="local (this machine) | ray: decode and caption on a Ray cluster "
                                             "(pip install 'imgsearch[ray]'); planning and writes stay here.")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", metavar="HEAD:6379",
                                                   help="--engine ray: the cluster's head (default: start a local "
                                                        "Ray instance).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="RUN_DIR",
                                                help="--engine ray: the run folder for the work manifest and the "
                                                     "Parquet shards (the same command again resumes a killed run).",
                                                show_default=False)] = None,
    ingest_after: Annotated[bool, typer.Option("--ingest/--no-ingest",
                                               help="--engine ray: write the shards into the library at the end "
                                                    "(else later: imgsearch ingest RUN_DIR).")] = True,
    path_map: Annotated[Optional[List[str]], typer.Option("--path-map", metavar="SRC=DST",
                                                          help="--engine ray: nodes that do not see a photo at its "
                                                               "path read it under DST instead of SRC (repeatable).",
                                                          show_default=False)] = None,
    actors: Annotated[Optional[int], typer.Option("--actors", min=1, help="--engine ray: captioning actors (default: "
                                                                          "one per GPU, else half the CPUs).",
                                                  show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    json_out: JsonOpt = False,
):
    """Index photos: caption new and changed files, follow moves, drop deleted ones."""
    device = check_device(device)
    if engine == "ray":
        if out is None:
            raise UserError("--engine ray needs --out RUN_DIR (the work manifest and the shards go there)")
        with sigterm_as_interrupt(), open_library(db, create=True, device=device, model=model) as lib:
            report = lib.index(paths, engine="ray", address=address, out=out, ingest=ingest_after,
                               path_map=path_map or (), actors=actors, batch_size=batch_size, beam=beam,
                               retry_failed=retry_failed, prune_empty=prune_empty, verify=verify, ocr=ocr)
        _print_cluster(report, quiet, json_out)
        return
    if address is not None or out is not None or path_map or actors is not None or not ingest_after:
        raise UserError("--address, --out, --no-ingest, --path-map and --actors are for --engine ray")
    if engine != "local":
        raise UserError(f"unknown engine {engine!r}: local | ray")
    if ocr:   # before the library is opened: one line saying how to install it
        from imgsearch.indexer.ocr import require as require_ocr

        require_ocr()
    bar = contextlib.nullcontext() if quiet or json_out else progress_bar()
    with sigterm_as_interrupt(), open_library(db, create=True, device=device, model=model) as lib, bar as progress:
        report = lib.index(paths, batch_size=batch_size, workers=workers, beam=beam, progress=progress,
                           retry_failed=retry_failed, prune_empty=prune_empty, verify=verify, ocr=ocr)
    if json_out:
        cli_output.print_json(report.to_dict())
        return
    if quiet:
        return
    cli_output.print_report(report)


@app.command()
@user_errors
def ingest(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="The run folder of index --engine ray --out.",
                                            show_default=False)],
    db: DbOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    json_out: JsonOpt = False,
):
    """Write the Parquet shards of a Ray index run into the library (idempotent: running it again changes nothing)."""
    bar = contextlib.nullcontext() if quiet or json_out else progress_bar()
    with sigterm_as_interrupt(), open_library(db, create=True) as lib, bar as progress:
        report = lib.ingest(run_dir, progress=progress)
    _print_cluster(report, quiet, json_out)


def _print_cluster(report, quiet: bool, json_out: bool) -> None:
    if json_out:
        cli_output.print_json(report.to_dict())
    elif not quiet:
        if report.ingested:
            cli_output.print_report(report)
        for line in report.summary_lines():
            cli_output.console().print(line, markup=False, highlight=False)


# ---------------------------------------------------------------------------- status

@app.command()
@user_errors
def status(
    errors: Annotated[bool, typer.Option("--errors", help="List the files that could not be indexed.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """Show what the library holds (and, with --errors, what failed)."""
    with open_library(db, create=False) as lib:
        st = lib.status()
        errs = lib.errors() if errors else None
    if json_out:
        if errs is not None:
            st = dict(st, errors=[{"path": p, "reason": r} for p, r in errs])
        cli_output.print_json(st)
        return
    cli_output.print_status(st, errs, errors_asked=errors)


# ---------------------------------------------------------------------------- forget / prune

DryRunOpt = Annotated[bool, typer.Option("--dry-run", "-n", help="Only show what would be removed.")]


def _print_removal(report, json_out: bool, what: str) -> None:
    if json_out:
        cli_output.print_json(report.to_dict())
    else:
        cli_output.print_removal(report, what)


@app.command()
@user_errors
def forget(
    paths: Annotated[List[Path], typer.Argument(help="Photos or folders to take out of the library (they need not "
                                                     "exist any more).", show_default=False)],
    dry_run: DryRunOpt = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """Remove photos or whole folders from the library (captions, caches, thumbnails); files stay on disk."""
    with open_library(db, create=False) as lib:
        report = lib.forget(paths, dry_run=dry_run)
    _print_removal(report, json_out, "forget")
    if report.unmatched and not report.removed:
        raise UserError("not in the library: " + ", ".join(report.unmatched))


@app.command()
@user_errors
def prune(
    path: Annotated[Optional[Path], typer.Argument(help="Only under this folder (it may be gone itself) "
                                                        "[default: the whole library].", show_default=False)] = None,
    dry_run: DryRunOpt = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """Drop photos whose files are gone (deleted, or on a drive that is not mounted: check with --dry-run)."""
    with open_library(db, create=False) as lib:
        report = lib.prune(path, dry_run=dry_run)
    _print_removal(report, json_out, "prune")
    if report.unmatched:
        raise UserError("not in the library: " + ", ".join(report.unmatched))
