#!/usr/bin/env python
"""The reads over every photo of a big library, each timed from a cold page cache (``--cold``: drops the OS page
cache before each, which needs root) or as they come: what an index run reads before it has anything to do (the
file scan, ``photos_under``, the version queries, ``stale_places``, the whole ``make_plan`` of a no-op re-index),
``imgsearch places`` (place_counts) and a date filter and sort (ids_dated, by_date).

    sudo python bench/full_reads.py LIBRARY.db ROOT --cold     # ROOT: the library's photo folder

Session 12's library: bench/ray_index.make_shards(1_000_000, W) and `imgsearch ingest W/ingest-run` into an
empty library (ROOT: W/ingest-pics).

Prints one JSON line (seconds). Session 12's figures (1M, rev 0011 vs rev 0012): bench/README.md, "Ingest rate".
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db")
    ap.add_argument("root")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each read (root only)")
    args = ap.parse_args(argv)

    from sqlalchemy import text

    from imgsearch.indexer import geotag
    from imgsearch.indexer.plan import make_plan
    from imgsearch.indexer.scan import scan
    from imgsearch.store import open_store, queries

    store = open_store(args.db, create=False, upgrade=False)
    with store.session() as s:
        version = s.execute(text("SELECT model_version FROM photos WHERE error IS NULL LIMIT 1")).scalar()
    out: dict = {}

    def timed(name, fn):
        if args.cold:
            subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
        t = time.monotonic()
        got = fn()
        out[f"{name}_s"] = round(time.monotonic() - t, 2)
        return got

    out["files"] = timed("scan", lambda: sum(1 for _ in scan([args.root])))
    with store.session() as s:
        timed("photos_under", lambda: queries.photos_under(s, [args.root]))
        if hasattr(queries, "not_at_version"):    # rev 0012 on
            from imgsearch.model.labels import LABELS_VERSION
            from imgsearch.store.models import Photo
            timed("labels_version", lambda: queries.not_at_version(s, Photo.labels_version, LABELS_VERSION))
        timed("stale_places", lambda: geotag.stale_places(s, set()))
    timed("place_counts", lambda: queries.place_counts(store))
    start, end = dt.datetime(1970, 1, 2), dt.datetime(2100, 1, 1)
    out["dated"] = len(timed("ids_dated", lambda: queries.ids_dated(
        store, start, end, int(start.timestamp() * 1e9), int(end.timestamp() * 1e9))))
    timed("by_date", lambda: queries.by_date(store, None, True, 20))
    out["work"] = len(timed("make_plan", lambda: make_plan(store, [args.root], get_version=lambda: version)).work)
    store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
