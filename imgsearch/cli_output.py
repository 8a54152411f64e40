"""What the CLI prints for people: rich tables (on stdout) of index reports, hits, status, captions and
retrieval scores. Machine output: the tab-separated query lines stay in ``cli/search_cmds.py``; ``--json`` is printed
with :func:`print_json` (valid UTF-8 whatever the file names).
Imports rich only when something is printed; never imports torch."""
from __future__ import annotations


def json_text(obj) -> str:
    """``obj`` as one line of JSON that is valid UTF-8 whatever the file names hold: a name that is not
    UTF-8 reaches Python as lone surrogates (``os.fsdecode``'s surrogateescape), written here as ``\\udcXX``
    escapes — JSON allows them, and ``os.fsencode(json.loads(...)[...])`` gives back the name's bytes."""
    import json
    import re

    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False))


def print_json(obj) -> None:
    """Machine output (``--json``): :func:`json_text` on stdout."""
    print(json_text(obj))


def shown(text: str) -> str:
    """``text`` safe to print for people: a file name that is not UTF-8 (lone surrogates, from
    ``os.fsdecode``) shows its odd bytes as U+FFFD instead of failing the whole table."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if isinstance(text, str) else text


def print_paths(paths, null: bool = False) -> None:
    """``--paths`` / ``-0``: each path on stdout as the file system's own bytes (a name that is not UTF-8
    comes out as it is on disk), ended by a newline, or by a NUL byte with ``null``."""
    import os
    import sys

    end = b"\0" if null else b"\n"
    out = sys.stdout.buffer
    sys.stdout.flush()
    out.write(b"".join(os.fsencode(p) + end for p in paths))
    out.flush()


def tsv_field(text) -> str:
    """One field of a tab-separated line: tabs and line breaks inside it become spaces."""
    return " ".join(str(text).replace("\t", " ").splitlines()) if text is not None else ""


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
    if getattr(report, "text_read", 0):
        con.print(f"text read in {report.text_read} photo(s) (OCR)", markup=False, highlight=False)
    for line in kept_lines(getattr(report, "kept", ())):
        con.print(line, markup=False, highlight=False)
    if report.errors:
        e = Table(title="could not index", show_header=True, header_style="bold")
        e.add_column("file", overflow="fold")
        e.add_column("reason", overflow="fold")
        for path, reason in report.errors[:50]:
            e.add_row(shown(path), shown(reason))
        con.print(e)
        if len(report.errors) > 50:
            con.print(f"... and {len(report.errors) - 50} more (imgsearch status --errors)")


def kept_lines(kept) -> list[str]:
    """One line per folder whose photos an index run kept although it did not find them."""
    import os

    out = []
    for folder, n in kept:
        state = "missing" if not os.path.isdir(folder) else "empty"
        out.append(f"kept: {n} photo{'s' if n != 1 else ''} under {folder} (folder {state}: an unmounted drive? "
                   f"--prune-empty or `imgsearch prune {folder}` removes them)")
    return out


def run_counts(run: dict) -> str:
    """An index run's counts in words: "207 added, 0 updated, 0 moved, 0 removed, 3 failed"."""
    return ", ".join(f"{run.get(k) or 0} {k}" for k in ("added", "updated", "moved", "removed", "failed"))


def print_removal(report, what: str) -> None:
    """What ``forget`` / ``prune`` removed (or would remove): per folder (at most 20), then the totals."""
    con = console()
    verb = "would remove" if report.dry_run else "removed"
    for folder, n in report.folders[:20]:
        con.print(f"  {n:>6}  {folder}", markup=False, highlight=False)
    if len(report.folders) > 20:
        con.print(f"  ... and {len(report.folders) - 20} more folders (--json lists every path)", markup=False)
    total = f"{what}: {verb} {report.photos} photo{'s' if report.photos != 1 else ''}"
    if report.failed:
        total += f" and {report.failed} failed-file record{'s' if report.failed != 1 else ''}"
    if report.folders:
        total += f" in {len(report.folders)} folder{'s' if len(report.folders) != 1 else ''}"
    if report.thumbnails:
        total += f" ({report.thumbnails} thumbnails deleted)"
    con.print(total, markup=False, highlight=False)
    if report.unreachable:
        con.print(f"{what}: kept {len(report.unreachable)} files that could not be checked (unreadable folder?), "
                  f"e.g. {report.unreachable[0]}", markup=False, highlight=False)
    for p in report.unmatched:
        con.print(f"{what}: no photo of the library is at or below {p}", markup=False, highlight=False)
    if report.dry_run and report.removed:
        con.print("nothing was changed (--dry-run)", markup=False)


def print_hits(hits) -> None:
    from rich.table import Table

    t = Table(show_header=True, header_style="bold", box=None)
    t.add_column("#", justify="right")
    t.add_column("score", justify="right")
    t.add_column("path", overflow="fold")
    t.add_column("caption", overflow="fold")
    t.add_column("date", no_wrap=True)
    for h in hits:
        t.add_row(str(h.rank), f"{h.score:.3f}", _esc(h.path) + copies_note(h), _esc(h.caption), hit_date(h))
    console().print(t)


def hit_date(h) -> str:
    """A hit's date for people: "2024-06-15 10:00" (EXIF date taken) or "2024-06-15 10:00 (file)" (the
    file's mtime); "–" when unknown."""
    if not getattr(h, "taken_at", None):
        return "–"
    return h.taken_at[:16].replace("T", " ") + (" (file)" if h.date_source == "file" else "")


def copies_note(h) -> str:
    """" (+1 copy)" / " (+N copies)" for a hit with byte-identical copies elsewhere (Hit.copies), else ""."""
    n = len(getattr(h, "copies", None) or ())
    return f" (+{n} {'copy' if n == 1 else 'copies'})" if n else ""


def print_duplicates(groups) -> None:
    """Groups of copies (search/duplicates.DuplicateGroup): a blank line between groups, the photo to keep
    first, then its copies with their visual similarity ("same file" for identical content)."""
    out = []
    for n, g in enumerate(groups, 1):
        out.append(f"{n}. {g.kind}: {len(g.photos)} photos")
        for j, p in enumerate(g.photos):
            how = "keep" if j == 0 else ("same file" if p.exact else f"{p.similarity:.3f}")
            out.append(f"  {how:>9}  {p.path}")
        out.append("")
    print("\n".join(out).rstrip("\n"))


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
    for r in st.get("roots") or ():
        where = {"ok": "", "empty": "  [yellow](empty folder now: an unmounted drive?)[/]",
                 "missing": "  [yellow](not found: an unmounted drive, or deleted? imgsearch prune PATH drops "
                            "its photos)[/]",
                 "unreadable": "  [yellow](cannot be read now)[/]"}.get(r["state"], "")
        failed = f", {r['failed']} failed" if r["failed"] else ""
        t.add_row("root", f"{_esc(r['path'])}: {r['photos']} photos{failed}{where}")
    last = st["last_index"]
    if last:
        t.add_row("last index", f"{last['finished_at']} ({last['seconds']:.1f} s): {run_counts(last)}")
    else:
        t.add_row("last index", "never")
    if st.get("index_running"):
        t.add_row("", f"[yellow]indexing now (running since {st.get('running_since') or '?'})[/]")
    elif st.get("last_run_interrupted"):
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


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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


def print_caption_lines(results) -> None:
    """``caption`` in a pipe: "path<TAB>caption<TAB>tag,tag" per captioned photo on stdout (like ``query``'s
    lines); a photo that failed is one "imgsearch: cannot caption PATH: REASON" line on stderr instead."""
    import sys

    for r in results:
        if r.error:
            print(f"imgsearch: cannot caption {r.path}: {r.error}", file=sys.stderr)
        else:
            print(f"{tsv_field(r.path)}\t{tsv_field(r.caption)}\t{','.join(tsv_field(x['tag']) for x in r.tags)}")


def print_demo(result) -> None:
    """``imgsearch demo``: what was indexed and how fast, then each query's hits (name, score, caption)."""
    import os

    con = console()
    out = lambda text="": con.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    out(f"imgsearch demo: {result.photos} sample photos in {result.photos_dir}")
    out("  (public domain / CC0 photos from scikit-image: LICENSE.txt next to them)")
    where = result.library or "a temporary library (deleted now; --keep FOLDER keeps it)"
    failed = f", {result.failed} failed" if result.failed else ""
    out(f"captioner loaded in {result.load_s:.1f} s; indexed {result.photos} photos{failed} in {result.index_s:.1f} s "
        f"({result.photos_per_s:.1f} photos/s, model export and warm-up included) into {where}")
    for a in result.answers:
        out()
        out(f'"{a.query}"  ({a.ms:.0f} ms)')
        if not a.hits:
            out("    no matching photos")
        for h in a.hits:
            tags = f"  [{', '.join(h.tags[:4])}]" if h.tags else ""
            out(f"  {h.rank:>2}  {h.score:7.3f}  {os.path.basename(h.path):<18}  {h.caption}{tags}")
    out()
    out("re-ranking " + ("on" if result.rerank else "off (--rerank turns it on)") + "; scores order the hits of "
        "one query; try your own: imgsearch demo \"a dog\" \"a brick wall\"")
    if result.library:
        out(f"search it again: imgsearch query --db {result.library} \"a cup of coffee\"")
    else:
        out("index your own photos: imgsearch index ~/Pictures && imgsearch query \"a dog on a beach\"")


def print_retrieval(res: dict) -> None:
    from rich.table import Table

    t = Table(show_header=True, header_style="bold", box=None,
              title=f"{res['images']} photos, {next(iter(res['modes'].values()))['queries']} caption queries")
    for c in ("mode", "R@1", "R@5", "R@10", "median rank"):
        t.add_column(c, justify="right")
    for m, r in res["modes"].items():
        t.add_row(m, f"{r['R@1']:.3f}", f"{r['R@5']:.3f}", f"{r['R@10']:.3f}", f"{r['median_rank']:.0f}")
    console().print(t)
