"""Indexing on a Ray cluster (the extra ``imgsearch[ray]``): one module a stage.

    plan.py     on the library's machine: today's scan + diff (indexer/plan.py) → the work manifest (Parquet)
                in RUN_DIR, minus the photos that already have a shard row (a resumed run)
    job.py      the distributed middle, Ray Data: read_parquet(manifest) → decode (map_batches over
                indexer/loader.decode_one, an error column instead of raising) → caption + embed in an
                actor pool that loads the captioner and MiniLM once → write_parquet(RUN_DIR/shards/<attempt>)
    shards.py   the shard schema (embeddings as fixed_size_list<float32>[384], cells / labels as binary) and
                reading shards back, the unreadable file of a killed run skipped
    ingest.py   on the library's machine: the shards streamed into the library with today's rules
                (indexer/rules.py) and writes (store/writes.py), one transaction per few thousand rows;
                idempotent (a second ingest, or one after a crash, gives the same library)
    run.py      the whole of ``imgsearch index --engine ray``: plan → job → ingest, under the library's lock

Nothing here is imported by ``import imgsearch`` or by a query: ray and pyarrow load only in an index
run with ``engine="ray"`` or in ``imgsearch ingest``.
"""
from __future__ import annotations

INSTALL_HINT = "indexing on a Ray cluster needs Ray: pip install 'imgsearch[ray]'"


def require():
    """Import ray and pyarrow, or raise UserError saying how to install them."""
    from imgsearch.errors import UserError

    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        raise UserError(f"{INSTALL_HINT} ({e})") from None
    return ray
