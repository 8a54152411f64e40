"""Planning, on the library's machine: today's scan + diff (indexer/plan.make_plan) written as the work manifest.

RUN_DIR/run.json        what ingest needs: the roots, the model version, the library
RUN_DIR/manifest.parquet  every photo the plan says needs work (shards.MANIFEST_SCHEMA)
RUN_DIR/submit/<attempt>.parquet  what this attempt sends to Ray: the manifest minus the photos that already
                          have a shard row for the same file (path, size, mtime_ns) and model version —
                          a killed run is resumed by running the same command
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imgsearch.cluster import shards
from imgsearch.errors import UserError
from imgsearch.files import atomic_write
from imgsearch.indexer.plan import Plan

RUN_FILE = "run.json"
MANIFEST = "manifest.parquet"


def new_attempt() -> str:
    """A fresh attempt name: sorts by time, never reused (Ray's write_parquet appends to a folder)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{uuid.uuid4().hex[:8]}"


def write_run(run_dir: Path, roots: list[str], version: str, library: str, options: dict | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    atomic_write(path, json.dumps({"roots": roots, "model_version": version, "library": library,
                                       "options": options or {}}, indent=1))


def read_run(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"not a Ray run folder (no {RUN_FILE}): {run_dir}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {Path(run_dir) / RUN_FILE}: {e}") from None


def manifest_rows(store, plan: Plan) -> list[dict]:
    """One row per work item; the work items whose file vanished since the scan are left out."""
    from sqlalchemy import select

    from imgsearch.store.models import Photo

    ids = [w.photo_id for w in plan.work if w.photo_id is not None]
    known: dict[int, str | None] = {}
    with store.session() as s:
        for i in range(0, len(ids), 900):
            known.update(s.execute(select(Photo.id, Photo.content_hash).where(Photo.id.in_(ids[i:i + 900]))).all())
    rows = []
    for w in plan.work:
        if w.reason == "ocr":
            continue   # text only: not done on the cluster (index --ocr locally)
        try:
            st = os.stat(w.path)
        except OSError:
            continue   # gone since the scan: the next run sees it gone
        rows.append({"path": w.path, "reason": w.reason, "photo_id": w.photo_id, "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns,
                     "content_hash": known.get(w.photo_id) if w.reason in ("stale", "labels", "retry") else None})
    return rows


def done_keys(run_dir: Path, version: str) -> set[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the files that already have a shard row by model ``version``."""
    return {(r["path"], r["size"], r["mtime_ns"]) for r in shards.read_keys(run_dir) if r["model_version"] == version}


def write_manifest(run_dir: Path, rows: list[dict], attempt: str, version: str) -> tuple[Path | None, int]:
    """Write the manifest and this attempt's submission; returns (submission file or None, rows already done)."""
    pq.write_table(pa.Table.from_pylist(rows, schema=shards.MANIFEST_SCHEMA), _tmp(run_dir / MANIFEST))
    os.replace(_tmp(run_dir / MANIFEST), run_dir / MANIFEST)
    done = done_keys(run_dir, version)
    todo = [r for r in rows if (r["path"], r["size"], r["mtime_ns"]) not in done]
    if not todo:
        return None, len(rows)
    sub = run_dir / "submit" / f"{attempt}.parquet"
    sub.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(todo, schema=shards.MANIFEST_SCHEMA), sub)
    return sub, len(rows) - len(todo)


def _tmp(p: Path) -> Path:
    return p.with_name(p.name + ".tmp")
