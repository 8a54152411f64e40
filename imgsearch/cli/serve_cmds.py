"""demo (the two-command quick start) and serve (the web page)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from imgsearch import cli_output
from imgsearch.devices import DEVICE_HELP
from imgsearch.cli.common import DbOpt, JsonOpt, check_device, app, user_errors

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

    result = run_demo(queries or QUERIES, k=k, library=keep, device=check_device(device), rerank=rerank)
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
    workers: Annotated[Optional[int], typer.Option(min=1, max=32, metavar="N", help="Server processes sharing "
                                                   "the port, each with its own copy of the library's models and "
                                                   "indexes (~350 MiB at 10k photos, ~1 GB at 1M): 2 answer "
                                                   "concurrent searches on both cores of a 2-core machine; 1 "
                                                   "halves the memory. [default: 2, or 1 on one core]",
                                                   show_default=False)] = None,
):
    """Serve a local web page to search the library by eye (Ctrl-C to stop)."""
    from imgsearch.serve import serve_command

    serve_command(db, host=host, port=port, workers=workers)
