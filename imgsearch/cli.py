"""Command line: ``imgsearch index | query | status | forget | prune | serve`` (thin wrappers over
:class:`imgsearch.Library`),
and ``caption | train | evaluate | evaluate-retrieval`` for the model.

``query`` prints a table on a terminal and tab-separated ``rank score path caption`` lines
when piped (``imgsearch query dog | cut -f3 | xargs feh``); ``--json`` for everything else.

Exit codes: 0 ok; 1 an error imgsearch reports on purpose (:class:`imgsearch.errors.ImgsearchError`:
missing folder, unreadable library, bad --device, a model that cannot be loaded...), as one line on
stderr without a traceback (:func:`user_errors`, the one place that maps them); 130 interrupted
(Ctrl-C; finished batches are kept). Machine-readable output (``--json``) goes to stdout with plain
``print``; the progress bar (:func:`progress_bar`), tables (``cli_output.py``) and messages meant for
people go through rich.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, Iterator, List, Optional

import typer

from imgsearch import cli_output
from imgsearch.devices import DEVICE_HELP
from imgsearch.errors import ImgsearchError, Terminated, UserError, storage_error

app = typer.Typer(
    name="imgsearch",
    help="Offline photo search: a captioning model describes every photo; search them with free text.",
    no_args_is_help=True,
    add_completion=True,        # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    rich_markup_mode=None,      # plain help: rich's would cut long defaults ("librar…") and eat "[default: X]"
    pretty_exceptions_enable=False,
)


def _help_metavar(param, ctx) -> Optional[str]:
    """What ``--help`` shows after an option that takes a value: its ``metavar``, else a word for its type
    (``--k N``, ``--model FILE``, ``--device TEXT``); nothing after a flag or an argument (whose name is
    shown already). Typer's own label is "<int range>" / "<str>" / "<bool>" after every one."""
    if param.metavar is not None:
        return param.metavar
    if getattr(param, "is_flag", False) or getattr(param, "count", False) or not hasattr(param, "is_flag"):
        return None
    label = (_TYPER_TYPE_LABEL(param, ctx) or "").strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    words = {"int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER", "str": "TEXT",
             "path": "PATH", "file": "FILE", "dir": "FOLDER", "bool": "BOOLEAN", "datetime": "DATE"}
    return words.get(label, label.upper() if label.isidentifier() else label or None)


def _use_help_metavars() -> None:
    """Install :func:`_help_metavar` as typer's type label of options and arguments (typer >= 0.2x; an older
    typer prints click's metavars, which are fine, and has no ``display_type_rich``)."""
    from typer import core

    global _TYPER_TYPE_LABEL
    if not hasattr(core.TyperOption, "display_type_rich") or getattr(core.TyperOption, "_imgsearch_help", False):
        return
    _TYPER_TYPE_LABEL = core.TyperOption.display_type
    core.TyperOption.display_type_rich = _help_metavar
    core.TyperOption._imgsearch_help = True
    if hasattr(core.TyperArgument, "display_type_rich"):
        core.TyperArgument.display_type_rich = lambda self, ctx: None


_TYPER_TYPE_LABEL: Callable = lambda param, ctx: None  # noqa: E731 - replaced by _use_help_metavars
_use_help_metavars()


def _print_version(value: bool) -> None:
    if value:
        from imgsearch import __version__

        typer.echo(f"imgsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print imgsearch's version and exit.")] = False,
) -> None:
    pass

DbOpt = Annotated[   # a str, not a Path: "some/folder/" (a trailing slash means a folder) must reach paths.py as typed
    Optional[str],
    typer.Option("--db", metavar="PATH", help="Library database file or folder (default: $IMGSEARCH_DB, else "
                              "$XDG_DATA_HOME/imgsearch/library.db, else ~/.local/share/imgsearch/library.db).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
PathsOpt = Annotated[bool, typer.Option("--paths", help="Print only the photos' absolute paths, one a line "
                                                        "(for xargs, feh, a shell loop).")]
NullOpt = Annotated[bool, typer.Option("-0", "--null", help="Like --paths, but each path ends with a NUL byte, "
                                                            "not a newline (xargs -0: any file name is safe).")]


def _fail(message: str, code: int = 1):
    typer.echo(f"imgsearch: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (a service manager stopping us, `kill PID`) raises :class:`Terminated`."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(_signum, _frame):
        raise Terminated()

    before = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _drop_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and Python's flush at exit must not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test runner's buffer)
        pass


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


def user_errors(fn: Callable) -> Callable:
    """The one place errors reach the user: an :class:`ImgsearchError` becomes one line on stderr and
    its ``exit_code`` (no traceback); Ctrl-C exits 130, SIGTERM in a long command 143; an OSError naming a
    file, one line and 1; stdout closed by its reader (``| head -1``): no message, exit 0."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a reader that left (`imgsearch query x | head -1`) shows here, not at exit
            return result
        except BrokenPipeError:  # the reader of stdout has what it wanted: stop quietly, exit 0
            _drop_stdout()
            raise typer.Exit(0)
        except ImgsearchError as e:
            _flush_stdout()
            _fail(str(e) or type(e).__name__, e.exit_code)
        except KeyboardInterrupt as e:
            what = "terminated" if isinstance(e, Terminated) else "interrupted"
            typer.echo(f"imgsearch: {what} (finished batches are saved; run the same command to resume)",
                       err=True)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130)
        except PermissionError as e:
            _fail(f"permission denied: {e.filename or e}")
        except Exception as e:  # the disk or the database file failed (full, damaged page): StoreError's one line
            mapped = storage_error(e)
            if mapped is not None:
                _fail(str(mapped), mapped.exit_code)
            if isinstance(e, OSError) and e.filename:
                _fail(f"{e.strerror or e}: {e.filename}")
            raise

    return wrapper


def _open(db: Optional[str], *, create: bool, **kw):
    from imgsearch.library import Library

    return Library(db, create=create, **kw)


def _device(text: str) -> str:
    """``--device`` checked before any work: UserError for a bad spelling; ModelError when it names a GPU
    this machine does not have (torch is imported only when a GPU is asked for)."""
    from imgsearch.devices import parse_device, resolve_device

    device = parse_device(text)
    if device.startswith("cuda"):
        resolve_device(device)
    return device


@contextlib.contextmanager
def progress_bar(label: str = "indexing") -> Iterator[Optional[Callable[[int, int], None]]]:
    """A rich bar on stderr (photos done / total, img/s, ETA) for ``Library.index(progress=...)``: yields
    its ``(done, total)`` callback, or None when stderr is not a terminal (nothing is drawn)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} img/s" if speed else "– img/s", style="progress.data.speed")

    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            if total == 0:
                return
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


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
    device = _device(device)
    if engine == "ray":
        if out is None:
            raise UserError("--engine ray needs --out RUN_DIR (the work manifest and the shards go there)")
        with sigterm_as_interrupt(), _open(db, create=True, device=device, model=model) as lib:
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
    with sigterm_as_interrupt(), _open(db, create=True, device=device, model=model) as lib, bar as progress:
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
    with sigterm_as_interrupt(), _open(db, create=True) as lib, bar as progress:
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


# ---------------------------------------------------------------------------- query

@app.command()
@user_errors
def query(
    text: Annotated[Optional[str], typer.Argument(metavar="TEXT", help="What to look for, in plain words.",
                                                  show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--k", metavar="N", help="Number of results (at least 1).")] = 10,
    mode: Annotated[str, typer.Option(metavar="MODE", help="hybrid (all signals) | bm25 (words) | dense (the query against "
                                           "caption embeddings) | image (against photo embeddings) | labels "
                                           "(against zero-shot ImageNet labels) | text (the text read inside "
                                           "photos: index --ocr).")] = "hybrid",
    like: Annotated[Optional[Path], typer.Option("--like", help="Find photos similar to this photo (indexed or not); "
                                                                "with TEXT, photos matching TEXT that look like it.",
                                                 show_default=False)] = None,
    folder: Annotated[Optional[Path], typer.Option("--in", help="Only photos under this folder.",
                                                   show_default=False)] = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank",
                                         help="hybrid: re-rank the best candidates by how likely the captioner "
                                              "is to write TEXT for each photo.")] = True,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", help="Cut photos whose relevance to TEXT (0..1: 1 = its captions, keywords or tags share a "
                            "word with TEXT, else its best cosine with TEXT) is lower. Default: the calibrated "
                            "bar; 0 keeps everything.", show_default=False)] = None,
    after: Annotated[Optional[str], typer.Option(
        "--after", metavar="DATE", help="Only photos taken in or after DATE: 2024, 2024-06 or 2024-06-15 (the EXIF "
                                        "date taken, else the file's date).", show_default=False)] = None,
    before: Annotated[Optional[str], typer.Option(
        "--before", metavar="DATE", help="Only photos taken in or before DATE (2024-06: up to the end of June).",
        show_default=False)] = None,
    sort: Annotated[str, typer.Option("--sort", metavar="ORDER",
                                      help="relevance | newest | oldest (newest/oldest: the best 1,000 matches by "
                                           "date; without TEXT, every photo by date).")] = "relevance",
    near: Annotated[Optional[str], typer.Option(
        "--near", metavar="PLACE", help="Only photos taken near PLACE (EXIF GPS): a city (Lisbon, \"Paris, Texas\": "
                                        "the most populous of that name) or LAT,LON.", show_default=False)] = None,
    within: Annotated[Optional[float], typer.Option(
        "--within", metavar="KM", help="With --near: how far from PLACE, in km [default: 25].",
        show_default=False)] = None,
    paths_out: PathsOpt = False,
    null: NullOpt = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """Search the library with free text and/or --like PHOTO; "-word" in TEXT leaves out photos about that word
    (`imgsearch query "dog -beach"`); with only --after/--before/--sort, list photos by date."""
    if text is None and like is None and after is None and before is None and near is None and sort == "relevance":
        raise UserError("give TEXT, --like PHOTO, or --after/--before/--near/--sort newest to list photos by date")
    with _open(db, create=False) as lib:
        hits = lib.query(text, k=k, mode=mode, in_folder=folder, like=like, rerank=rerank, min_score=min_score,
                         after=after, before=before, sort=sort, near=near, within=within)
    if json_out:
        cli_output.print_json([h.to_dict() for h in hits])
        return
    if paths_out or null:
        cli_output.print_paths([h.path for h in hits], null=null)
        return
    if not hits:
        typer.echo("no matching photos", err=True)
        return
    if not sys.stdout.isatty():  # piped: one tab-separated line per hit (rank, score, path, caption)
        for h in hits:
            print(f"{h.rank}\t{h.score:.4f}\t{h.path}\t{h.caption}")
        return
    cli_output.print_hits(hits)


@app.command()
@user_errors
def places(
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """List where the photos were taken (the nearest GeoNames place of their EXIF GPS), most photos first."""
    with _open(db, create=False) as lib:
        found = lib.places()
    if json_out:
        cli_output.print_json(found)
        return
    if not found:
        typer.echo("no photo has a place (none has GPS in its EXIF)", err=True)
        return
    for p in found:
        print(f"{p['photos']}\t{p['place']}")


@app.command()
@user_errors
def duplicates(
    near: Annotated[bool, typer.Option("--near", help="Also photos that look the same: resized, re-encoded, lightly "
                                                      "cropped or edited copies (not only identical files).")] = False,
    folder: Annotated[Optional[Path], typer.Option("--in", help="Only photos under this folder.",
                                                   show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", metavar="COSINE", help="With --near: how alike two photos must look (visual cosine, "
                                              "default 0.70; higher finds fewer).", show_default=False)] = None,
    paths_out: PathsOpt = False,
    null: NullOpt = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """List groups of copies: identical files (the same content), and with --near edited copies too.
    --paths / -0: each group's absolute paths, the one to keep first, then an empty line (-0: an empty
    NUL-ended record) after each group, as fdupes prints them."""
    with _open(db, create=False) as lib:
        groups = lib.duplicates(near=near, folder=folder, threshold=threshold)
    if json_out:
        cli_output.print_json([g.to_dict() for g in groups])
        return
    if paths_out or null:
        cli_output.print_paths([path for g in groups for path in [*(p.path for p in g.photos), ""]], null=null)
        return
    if not groups:
        typer.echo("no duplicates" + (" (not even near ones)" if near else " (--near also finds edited copies)"),
                   err=True)
        return
    cli_output.print_duplicates(groups)


# ---------------------------------------------------------------------------- status

@app.command()
@user_errors
def status(
    errors: Annotated[bool, typer.Option("--errors", help="List the files that could not be indexed.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
):
    """Show what the library holds (and, with --errors, what failed)."""
    with _open(db, create=False) as lib:
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
    with _open(db, create=False) as lib:
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
    with _open(db, create=False) as lib:
        report = lib.prune(path, dry_run=dry_run)
    _print_removal(report, json_out, "prune")
    if report.unmatched:
        raise UserError("not in the library: " + ", ".join(report.unmatched))


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
    device = _device(device)
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
    cap = Captioner.load(model, device=_device(device))
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

    res = evaluate_captions(captions, images, Captioner.load(model, device=_device(device)), beam=beam,
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

    device = _device(device)
    bar = contextlib.nullcontext() if json_out else progress_bar()
    with bar as progress:
        res = run(captions, images, modes=tuple(mode or MODES), library=library, limit=limit, device=device,
                  progress=progress)
    if json_out:
        print(json.dumps(res, ensure_ascii=False))
        return
    cli_output.print_retrieval(res)


# ---------------------------------------------------------------------------- demo

@app.command()
@user_errors
def demo(
    queries: Annotated[Optional[List[str]], typer.Argument(
        metavar="QUERY", help="Queries to answer [default: a cup of coffee, a cat, a man holding a camera, "
                              "a rocket launch, a horse].", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--k", metavar="N", help="Hits per query (at least 1).")] = 3,
    keep: Annotated[Optional[Path], typer.Option("--keep", metavar="FOLDER", help="Keep the demo library in FOLDER "
                                                 "(then `imgsearch query --db FOLDER ...`) [default: a temporary "
                                                 "one, deleted].", show_default=False)] = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="Re-rank with the captioner (off: on these "
                                         "photos, unlike its Flickr8k training set, it hurts).")] = False,
    device: Annotated[str, typer.Option(metavar="DEVICE", help=DEVICE_HELP)] = "cpu",
    json_out: JsonOpt = False,
):
    """Index the 8 sample photos that ship with imgsearch (public domain / CC0) into a temporary library, then
    answer a few queries, with the timings: the whole product in one command, nothing downloaded."""
    from imgsearch.demo import QUERIES, run_demo

    result = run_demo(queries or QUERIES, k=k, library=keep, device=_device(device), rerank=rerank)
    if json_out:
        cli_output.print_json(result.to_dict())
        return
    cli_output.print_demo(result)


# ---------------------------------------------------------------------------- serve

@app.command()
@user_errors
def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but 127.0.0.1 / localhost makes the "
                                           "photos reachable from the network (a warning is printed).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 = any free port).")] = 8765,
):
    """Serve a local web page to search the library by eye (Ctrl-C to stop)."""
    from imgsearch.serve import serve_command

    serve_command(db, host=host, port=port)


def main() -> None:  # pragma: no cover - `python -m imgsearch.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
