"""The search commands: query, places, duplicates."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from imgsearch import cli_output
from imgsearch.errors import UserError
from imgsearch.cli.common import DbOpt, JsonOpt, NullOpt, PathsOpt, open_library, app, user_errors

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
    with open_library(db, create=False) as lib:
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
    with open_library(db, create=False) as lib:
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
    with open_library(db, create=False) as lib:
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
