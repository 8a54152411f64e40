"""Command line: ``imgsearch index | ingest | query | places | duplicates | status | forget | prune | demo |
serve`` (thin wrappers over :class:`imgsearch.Library`), and ``caption | train | evaluate | evaluate-retrieval``
for the model. One module a group of commands, all on one typer app (``common.app``):

    common.py        the app, shared options, user_errors (errors → exit codes), opening a library, progress
    library_cmds.py  index (local or --engine ray), ingest, status, forget, prune
    search_cmds.py   query, places, duplicates
    model_cmds.py    train, caption, evaluate, evaluate-retrieval
    serve_cmds.py    demo, serve

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

from imgsearch.cli.common import app, progress_bar, sigterm_as_interrupt, user_errors
from imgsearch.cli import library_cmds, search_cmds, serve_cmds, model_cmds  # noqa: F401,I001 - they add the commands, in this order

__all__ = ["app", "main", "progress_bar", "sigterm_as_interrupt", "user_errors"]


def main() -> None:  # pragma: no cover - `python -m imgsearch.cli`
    app()


