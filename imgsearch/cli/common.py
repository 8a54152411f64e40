"""What every command shares: the typer app, the common options, the one place errors become exit codes
(:func:`user_errors`), opening a library, the progress bar."""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Annotated, Callable, Iterator, Optional

import typer

from imgsearch.errors import ImgsearchError, Terminated, storage_error

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


def open_library(db: Optional[str], *, create: bool, **kw):
    from imgsearch.library import Library

    return Library(db, create=create, **kw)


def check_device(text: str) -> str:
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
