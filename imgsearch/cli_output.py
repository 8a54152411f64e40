"""What the CLI prints for people: rich tables (on stdout) of index reports, hits, status, captions and
retrieval scores. Machine output (``--json``, the tab-separated query lines) stays in ``cli.py``.
Imports rich only when something is printed; never imports torch."""
from __future__ import annotations


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False)


def print_report(report) -> None:
    """An index run's counts, then (at most 50 of) the files that could not be indexed."""
    from rich.table import Table

    con = console()
    t = Table(title=f"indexed in {report.seconds:.1f} s", show_header=True, header_style="bold")
    for col in ("added", "updated", "moved", "removed", "failed", "unchanged"):
        t.add_column(col, justify="right")
    t.add_row(*(str(v) for v in (report.added, report.updated, report.moved, report.removed, report.failed,
                                 report.skipped_unchanged)))
    con.print(t)
    if report.errors:
        e = Table(title="could not index", show_header=True, header_style="bold")
        e.add_column("file", overflow="fold")
        e.add_column("reason", overflow="fold")
        for path, reason in report.errors[:50]:
            e.add_row(path, reason)
        con.print(e)
        if len(report.errors) > 50:
            con.print(f"... and {len(report.errors) - 50} more (imgsearch status --errors)")


def print_hits(hits) -> None:
    from rich.table import Table

    t = Table(show_header=True, header_style="bold", box=None)
    t.add_column("#", justify="right")
    t.add_column("score", justify="right")
    t.add_column("path", overflow="fold")
    t.add_column("caption", overflow="fold")
    for h in hits:
        t.add_row(str(h.rank), f"{h.score:.3f}", h.path, h.caption)
    console().print(t)


def print_status(st: dict, errs: list[tuple[str, str]] | None, errors_asked: bool) -> None:
    """``Library.status()`` as a two-column table; then ``errs`` (path, reason), when given."""
    from rich.table import Table

    con = console()
    t = Table(show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("library", st["db_path"])
    t.add_row("photos", str(st["photos"]))
    t.add_row("failed", str(st["failed"]) + ("" if errors_asked or not st["failed"]
                                             else "  (imgsearch status --errors)"))
    versions = st["model_versions"]
    t.add_row("model", ", ".join(f"{v} ({n})" for v, n in versions.items()) if versions else "–")
    last = st["last_index"]
    if last:
        t.add_row("last index", f"{last['finished_at']} ({last['seconds']:.1f} s: +{last['added']} "
                                f"~{last['updated']} >{last['moved']} -{last['removed']} !{last['failed']})")
    else:
        t.add_row("last index", "never")
    if st.get("last_run_interrupted"):
        t.add_row("", "[yellow]the latest run was interrupted; run index again to finish it[/]")
    t.add_row("size on disk", human_size(st["size_bytes"]))
    rr = st.get("reranking") or {}
    if st["photos"]:
        if rr.get("photos"):
            left = st["photos"] - rr["photos"]
            t.add_row("re-ranking", f"{rr['photos']} photos" + (f"; {left} described by another checkpoint "
                                                                 "(imgsearch index re-describes them)" if left else "")
                      + ("" if rr.get("scorer_cached") else "; the first query exports the scorer (a few seconds)"))
        else:
            t.add_row("re-ranking", "off: no photo is described by the current checkpoint (run imgsearch index)")
    con.print(t)
    if errs:
        e = Table(show_header=True, header_style="bold")
        e.add_column("file", overflow="fold")
        e.add_column("reason", overflow="fold")
        for p, r in errs:
            e.add_row(p, r)
        con.print(e)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def print_captions(results) -> None:
    from rich.table import Table

    t = Table(show_header=True, header_style="bold", box=None)
    t.add_column("path", overflow="fold")
    t.add_column("caption", overflow="fold")
    t.add_column("tags", overflow="fold")
    for r in results:
        t.add_row(r.path, r.caption if not r.error else f"[red]error: {r.error}[/]",
                  ", ".join(x["tag"] for x in r.tags))
    console().print(t)


def print_retrieval(res: dict) -> None:
    from rich.table import Table

    t = Table(show_header=True, header_style="bold", box=None,
              title=f"{res['images']} photos, {next(iter(res['modes'].values()))['queries']} caption queries")
    for c in ("mode", "R@1", "R@5", "R@10", "median rank"):
        t.add_column(c, justify="right")
    for m, r in res["modes"].items():
        t.add_row(m, f"{r['R@1']:.3f}", f"{r['R@5']:.3f}", f"{r['R@10']:.3f}", f"{r['median_rank']:.0f}")
    console().print(t)
