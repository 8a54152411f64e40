"""``imgsearch index --engine ray`` and ``imgsearch ingest``: plan → Ray job → ingest, under the library's lock.

Planning and every write happen here, on the library's machine; only decoding and captioning run on the
cluster. Without ``address`` a local Ray instance is started (and stopped at the end); a Ray instance this
process already started (``ray.init`` before the call) is used as it is.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from imgsearch.indexer.report import IndexReport


@dataclass
class ClusterReport(IndexReport):
    """An index run on Ray: the ingest's counts (IndexReport) and what the cluster did."""

    run_dir: str = ""
    attempt: str | None = None       # the shard folder this run wrote (None: nothing was submitted)
    planned: int = 0                 # photos the plan said need work
    submitted: int = 0               # of them, sent to Ray (the others had a shard row: a resumed run)
    ingested: bool = False           # False with --no-ingest: run ``imgsearch ingest RUN_DIR``
    not_ingested: int = 0            # planned photos the ingest found no usable shard row for
    job_seconds: float = 0.0
    ingest_seconds: float = 0.0
    nodes: list = field(default_factory=list)
    job: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)   # the ingest's seconds: plan_s, writes_s, finish_s, faiss_s and bm25_s (side by side), caches_s (both)

    def summary_lines(self) -> list[str]:
        """What the CLI says about the cluster's part, after the usual counts."""
        out = []
        if self.planned or self.submitted or self.attempt:
            done = self.planned - self.submitted
            out.append(f"Ray: {self.submitted} of {self.planned} photo(s) submitted"
                       + (f" ({done} already had a shard row)" if done else "")
                       + (f", job {self.job_seconds:.1f} s on {len(self.nodes)} node(s)" if self.attempt else ""))
        if not self.ingested:
            out.append(f"shards in {self.run_dir}: write them into the library with: imgsearch ingest {self.run_dir}")
        elif self.not_ingested:
            out.append(f"{self.not_ingested} photo(s) had no usable shard row (changed since, or not done): run the "
                       "same index --engine ray command again")
        return out

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["cluster"] = {"run_dir": self.run_dir, "attempt": self.attempt, "planned": self.planned,
                        "submitted": self.submitted, "ingested": self.ingested, "not_ingested": self.not_ingested,
                        "job_seconds": round(self.job_seconds, 3), "ingest_seconds": round(self.ingest_seconds, 3),
                        "nodes": [{k: n.get(k) for k in ("node", "host", "python", "ray", "imgsearch")}
                                  for n in self.nodes], **self.job,
                        "ingest_phases": {k: round(v, 3) for k, v in self.phases.items()}}
        return d


@contextlib.contextmanager
def connected(address: str | None):
    """A Ray connection: ``address`` (HEAD:6379, or "auto"), else the one this process holds, else a new local
    instance (include_dashboard=False); one this function started is shut down at the end.

    While a connection this function made is open, this process's stdout is its stderr: Ray's driver prints the
    raylet's warnings ("(raylet) WARNING: 4 PYTHON worker processes have been started ...") on stdout from a
    thread of its own, even with ``log_to_driver=False``, and stdout is where the caller's results go (JSON,
    TSV). A connection the caller made is left as the caller set it up."""
    import ray

    if ray.is_initialized():
        yield
        return
    kw = {"address": address} if address else {"include_dashboard": False}
    with contextlib.redirect_stdout(sys.stderr):
        try:
            ray.init(log_to_driver=False, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            from imgsearch.errors import UserError

            raise UserError(f"cannot connect to the Ray cluster at {address or 'a new local instance'}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        try:
            yield
        finally:
            ray.shutdown()


def index(lib, roots: list[str], out: str | os.PathLike, *, address: str | None = None, ingest: bool = True,
          path_map: Sequence[str] = (), batch_size: int = 32, beam: int = 3, actors: int | None = None,
          device: str | None = None, retry_failed: bool = False, prune_empty: bool = False,
          verify: bool = False, progress: Callable[[int, int], None] | None = None) -> ClusterReport:
    """Index ``roots`` of ``lib`` (a Library) on Ray; see Library.index(engine="ray")."""
    from imgsearch import cluster
    from imgsearch.cluster import job, plan as cplan
    from imgsearch.files import remove_stale_temps
    from imgsearch.gcpause import paused
    from imgsearch.indexer.lock import index_lock
    from imgsearch.indexer.plan import make_plan

    cluster.require()
    pmap = job.parse_path_map(path_map)
    run_dir = Path(out).expanduser().resolve()
    store = lib._writable_store()
    version = lib.models.version()
    rep = ClusterReport(run_dir=str(run_dir))
    with index_lock(lib.path):
        with paused():   # planning (a million files: half its time is the collector's); not the Ray job
            plan = make_plan(store, roots, get_version=lambda: version, retry_failed=retry_failed,
                             prune_empty=prune_empty, verify=verify)
            cplan.write_run(run_dir, plan.roots, version, str(lib.path),
                            {"retry_failed": retry_failed, "prune_empty": prune_empty, "verify": verify})
            rows = cplan.manifest_rows(store, plan)
            attempt = cplan.new_attempt()
            submit, already = cplan.write_manifest(run_dir, rows, attempt, version)
        rep.planned, rep.submitted = len(rows), len(rows) - already
        if submit is not None:
            t0 = time.monotonic()
            # the same path on every node: absolute (the workers' working folder is not this one)
            checkpoint = str(Path(lib.models.checkpoint).resolve()) if lib.models.checkpoint is not None else None
            with connected(address):
                rep.nodes = job.check_nodes([r["path"] for r in rows[:3]], pmap)
                rep.job = job.run_job(submit, run_dir / "shards" / attempt, checkpoint=checkpoint, version=version,
                                      device=device or lib.models.device, batch_size=batch_size, beam=beam,
                                      actors=actors, path_map=pmap, rows=rep.submitted)
            rep.attempt = attempt
            rep.job_seconds = time.monotonic() - t0
        if ingest:
            _ingest_locked(lib, run_dir, rep, progress)
            remove_stale_temps(lib.path.parent, lib.path.name)
    return rep


def ingest(lib, run_dir: str | os.PathLike, *, progress: Callable[[int, int], None] | None = None,
           chunk: int | None = None, bulk: bool = True) -> ClusterReport:
    """Write the shards of the Ray run in ``run_dir`` into ``lib`` (idempotent); see Library.ingest."""
    from imgsearch import cluster
    from imgsearch.indexer.lock import index_lock

    cluster.require()
    run_dir = Path(run_dir).expanduser().resolve()
    rep = ClusterReport(run_dir=str(run_dir))
    lib._writable_store()
    with index_lock(lib.path):
        _ingest_locked(lib, run_dir, rep, progress, chunk, bulk)
    return rep


def _ingest_locked(lib, run_dir: Path, rep: ClusterReport, progress, chunk: int | None = None,
                   bulk: bool = True) -> None:
    from imgsearch.cluster.ingest import CHUNK, ShardIngest
    from imgsearch.cluster.plan import read_run
    from imgsearch.gcpause import paused

    read_run(run_dir)   # UserError when it is not a run folder
    store = lib._writable_store()
    rev0 = store.cache_key()
    runner = ShardIngest(store, run_dir, get_embedder=lib.models.embedder, chunk=chunk or CHUNK, progress=progress,
                         bulk=bulk)
    t0 = time.monotonic()
    with paused():   # plan, writes and caches: millions of live objects that each full collection would walk
        early = None
        try:
            report = runner.run()
            early = runner.early_indexes()   # IVF indexes trained and filled during the writes (early_training.py)
        finally:   # what was committed before a failure is searchable too (FAISS and BM25: side by side)
            runner.cancel_training()
            t1 = time.monotonic()
            took = lib.caches.update(rev0, runner.changed(), early)
            rep.phases = {**runner.phases, **took, "caches_s": time.monotonic() - t1}
            if early is not None:   # how long the FAISS build waited for it; its thread's time, start to end
                rep.phases.update(training_wait_s=early.wait_s, early_training_s=early.seconds)
    for k in ("added", "updated", "moved", "removed", "failed", "skipped_unchanged", "labelled", "placed",
              "text_read", "errors", "kept", "seconds"):
        setattr(rep, k, getattr(report, k))
    rep.ingested, rep.not_ingested = True, runner.not_ingested
    rep.ingest_seconds = time.monotonic() - t0
