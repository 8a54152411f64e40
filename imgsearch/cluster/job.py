"""The distributed middle of ``index --engine ray``: Ray Data from the submitted manifest to Parquet shards.

    read_parquet(RUN_DIR/submit/<attempt>.parquet)
      → map_batches(decode_batch, num_cpus=1)          today's safe decoder (indexer/loader.decode_one); a bad
                                                       file becomes an ``error`` value, never an exception (Ray
                                                       Data's max_errored_blocks is 0: one raise fails the job)
      → map_batches(Describer, ActorPoolStrategy)      loads the captioner and MiniLM once per actor; num_gpus=1
                                                       per actor where the cluster has GPUs
      → write_parquet(RUN_DIR/shards/<attempt>)        a fresh folder per attempt (write_parquet appends)

No ``read_images``: it skips HEIC and lists every file from the driver. Before the job, every node is asked for
its Python, Ray and imgsearch versions and whether it sees the photos (``--path-map SRC=DST`` for nodes that
mount them elsewhere); a mismatch stops the run with one message naming the node.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import socket
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from imgsearch.cluster import shards
from imgsearch.errors import ModelError, UserError

log = logging.getLogger(__name__)

DECODE_BATCH = 16


# ---------------------------------------------------------------------------- paths and versions

def parse_path_map(specs: Sequence[str] | None) -> list[tuple[str, str]]:
    """``["/photos=/mnt/photos"]`` → [("/photos", "/mnt/photos")] (UserError for a bad one)."""
    out = []
    for spec in specs or ():
        src, sep, dst = str(spec).partition("=")
        if not sep or not src or not dst:
            raise UserError(f"--path-map takes SRC=DST (the library's folder = where the nodes see it), not {spec!r}")
        out.append((os.path.normpath(src), os.path.normpath(dst)))
    return out


def node_path(path: str, path_map: Sequence[tuple[str, str]]) -> str:
    """Where this node reads ``path``: itself when it exists here, else its first mapped form."""
    for src, dst in path_map:
        if path == src or path.startswith(src.rstrip(os.sep) + os.sep):
            if not os.path.exists(path):
                return dst + path[len(src.rstrip(os.sep)):] if src != os.sep else os.path.join(dst, path[1:])
    return path


def imgsearch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgsearch")
    except PackageNotFoundError:   # pragma: no cover - a source tree that is not installed
        return "unknown"


def facts(sample: Sequence[str] = (), path_map: Sequence[tuple[str, str]] = ()) -> dict:
    """This process's versions and which of the ``sample`` photos it cannot see."""
    import ray

    return {"host": socket.gethostname(), "python": platform.python_version(), "ray": ray.__version__,
            "imgsearch": imgsearch_version(),
            "missing": [p for p in sample if not os.path.exists(node_path(p, path_map))]}


def check_nodes(sample: Sequence[str], path_map: Sequence[tuple[str, str]]) -> list[dict]:
    """Ask every alive node for :func:`facts`; UserError naming each node that differs from this machine
    (versions) or cannot see the photos. Returns the facts, one dict a node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = facts()
    probe = ray.remote(num_cpus=0)(facts)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    got = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                   .remote(list(sample), list(path_map)) for n in nodes], timeout=300)
    problems = []
    for n, f in zip(nodes, got):
        f["node"] = n.get("NodeManagerAddress", n["NodeID"][:8])
        diff = [f"{k} {f[k]} (here {here[k]})" for k in ("python", "ray", "imgsearch") if f[k] != here[k]]
        if diff:
            problems.append(f"node {f['node']} ({f['host']}) runs " + ", ".join(diff))
        if f["missing"]:
            problems.append(f"node {f['node']} ({f['host']}) cannot see the photos (e.g. {f['missing'][0]}): mount "
                            "them at the same path, or give --path-map SRC=DST")
    if problems:
        raise UserError("the Ray cluster does not match this machine: every node needs the same Python, Ray and "
                        "imgsearch versions and the photos: " + "; ".join(problems))
    return got


# ---------------------------------------------------------------------------- stages

def decode_batch(batch: pa.Table, image_size: int, resize: str, path_map: Sequence[tuple[str, str]]) -> pa.Table:
    """Manifest rows → the same rows plus ``image`` (float32 model input, raw bytes), ``info`` (JSON) and
    ``error`` (null when decoded). Never raises for a file."""
    from imgsearch.indexer.loader import decode_one, error_text

    _one_thread()
    images, infos, errors = [], [], []
    for path in batch.column("path").to_pylist():
        try:
            tensor, info = decode_one(node_path(path, path_map), image_size, resize)
            images.append(tensor.numpy().astype(np.float32, copy=False).tobytes())
            infos.append(json.dumps(info))
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - a bad file is its row's error, never the job's
            images.append(None)
            infos.append(None)
            errors.append(error_text(e))
    return (batch.append_column("image", pa.array(images, pa.binary()))
            .append_column("info", pa.array(infos, pa.string()))
            .append_column("error", pa.array(errors, pa.string())))


def _one_thread() -> None:
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class Describer:
    """The actor of the caption + embed stage: the captioner and MiniLM, loaded once."""

    def __init__(self, checkpoint: str | None, device: str, version: str, beam: int = 3, n_best: int = 3,
                 threads: int | None = None):
        import torch

        from imgsearch.model.labels import LABELS_VERSION
        from imgsearch.models import Models

        if threads:
            torch.set_num_threads(threads)
        self.models = Models(checkpoint, device)
        self.cap = self.models.captioner()
        if self.cap.version != version:
            raise ModelError(f"this node's checkpoint is {self.cap.version}, the library's run is {version}: "
                             "give every node the same checkpoint (--model)")
        self.embedder = self.models.embedder()
        self.beam, self.n_best, self.version, self.labels_version = beam, n_best, version, LABELS_VERSION

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = batch.to_pylist()
        out: list[dict | None] = [None] * len(rows)
        ok = []
        for i, r in enumerate(rows):
            if r["error"] is not None:
                out[i] = shards.failed_row(self._base(r), r["error"])
            else:
                ok.append(i)
        if ok:
            s = self.cap.image_size
            images = torch.stack([torch.frombuffer(bytearray(rows[i]["image"]), dtype=torch.float32).reshape(3, s, s)
                                  for i in ok])
            done, broken = self._model_step(images, ok)
            for k, i in enumerate(ok):
                info = json.loads(rows[i]["info"])
                if k in broken:
                    out[i] = shards.failed_row(self._base(rows[i]), f"could not be described: {broken[k]}", info)
                else:
                    d, vec = done[k]
                    out[i] = shards.described_row(self._base(rows[i]), info, d, vec, self.labels_version)
        return shards.to_table(out)

    def _base(self, r: dict) -> dict:
        return {"path": r["path"], "reason": r["reason"], "photo_id": r["photo_id"], "size": r["size"],
                "mtime_ns": r["mtime_ns"], "model_version": self.version}

    def _describe(self, images, ks: list[int]) -> dict:
        from imgsearch.text.caption_vectors import caption_vectors

        descs = self.cap.describe(images[ks], beam=self.beam, n_best=self.n_best)
        emb = caption_vectors(self.embedder, [[c for c, _ in d.captions] for d in descs],
                              [[t for t, _ in d.tags] for d in descs])
        return {k: (d, emb[j]) for j, (k, d) in enumerate(zip(ks, descs))}

    def _model_step(self, images, ok: list[int]) -> tuple[dict, dict]:
        """As IndexRunner._model_step: the batch, else each photo alone; every one failing alone for one reason
        is the model's fault (ModelError: the job stops, nothing is recorded against the photos)."""
        from imgsearch.indexer.runner import _reason

        ks = list(range(len(ok)))
        try:
            return self._describe(images, ks), {}
        except Exception as e:  # noqa: BLE001 - judged below
            first = _reason(e)
        done, broken = {}, ({0: first} if len(ks) == 1 else {})
        for k in ks if len(ks) > 1 else ():
            try:
                done.update(self._describe(images, [k]))
            except Exception as e:  # noqa: BLE001
                broken[k] = _reason(e)
        if not done and len(set(broken.values())) == 1:
            raise ModelError(f"model {self.version} fails on every photo ({first}); nothing was recorded")
        return done, broken


# ---------------------------------------------------------------------------- the job

def model_input(checkpoint: str | None) -> tuple[int, str]:
    """(image size, resize) of the checkpoint's photos, read from the file on this machine."""
    from imgsearch.model.encoder import ENCODERS
    from imgsearch.model.captioner import read_checkpoint
    from imgsearch.model.versions import shipped_checkpoint

    ckpt = read_checkpoint(Path(checkpoint) if checkpoint else shipped_checkpoint())
    return ENCODERS[ckpt.get("encoder", "lite0")].image_size, ckpt.get("resize", "squash")


def plan_resources(actors: int | None) -> dict:
    """Per actor: one GPU where the cluster has GPUs (as many actors as GPUs), else one CPU (half the CPUs:
    the decode tasks need the other half; never every CPU — Ray #44687: the pipeline hangs)."""
    import ray

    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    if gpus >= 1:
        n = actors or gpus
        return {"num_gpus": 1, "num_cpus": 1, "max_size": max(1, min(n, gpus)), "cpus": cpus, "gpus": gpus}
    if cpus < 2:
        raise UserError(f"the Ray cluster has {cpus} CPU: the decode tasks and the captioning actor need at least 2 "
                        "(with one the pipeline waits forever, Ray issue #44687)")
    n = actors or max(1, cpus // 2)
    return {"num_gpus": 0, "num_cpus": 1, "max_size": max(1, min(n, cpus - 1)), "cpus": cpus, "gpus": 0}


def run_job(submit: Path, out: Path, *, checkpoint: str | None, version: str, device: str = "auto",
            batch_size: int = 32, beam: int = 3, actors: int | None = None,
            path_map: Sequence[tuple[str, str]] = (), rows: int = 0) -> dict:
    """Run the pipeline on the connected Ray instance; returns what it ran with."""
    import ray

    image_size, resize = model_input(checkpoint)
    res = plan_resources(actors)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(os.environ.get("IMGSEARCH_RAY_PROGRESS"))
    # blocks of DECODE_BATCH rows (the actors start on the first ones while the rest decode), at most 8 a CPU
    # or 1,000 rows a block (10M photos: 10,000 blocks, as many shard files)
    blocks = max(1, min(math.ceil(rows / DECODE_BATCH), max(8 * res["cpus"], math.ceil(rows / 1000))))
    ds = ray.data.read_parquet(str(submit)).repartition(blocks)
    # ray_remote_args_fn: keeps the decode tasks apart from the actors. Without it Ray Data fuses a task stage into
    # the next actor stage whose resources are the same (a CPU actor: num_cpus=1 each), and every actor would
    # decode its own photos serially instead of the decode tasks filling the other CPUs.
    ds = ds.map_batches(decode_batch, batch_format="pyarrow", batch_size=DECODE_BATCH, num_cpus=1,
                        ray_remote_args_fn=_decode_task_args,
                        fn_kwargs={"image_size": image_size, "resize": resize, "path_map": list(path_map)})
    threads = None if res["num_gpus"] else res["num_cpus"]   # a CPU actor: as many torch threads as CPUs it holds
    ds = ds.map_batches(Describer, batch_format="pyarrow", batch_size=batch_size,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=res["max_size"]),
                        num_gpus=res["num_gpus"], num_cpus=res["num_cpus"],
                        fn_constructor_kwargs={"checkpoint": checkpoint, "device": device, "version": version,
                                               "beam": beam, "threads": threads})
    try:
        ds.write_parquet(str(out))
    except Exception as e:  # noqa: BLE001 - a Ray job failure, said in one line
        cause = _root_cause(e)
        if isinstance(cause, ModelError):
            raise ModelError(str(cause)) from None
        raise UserError(f"the Ray job failed ({type(cause).__name__}: {str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ''}); "
                        "the rows written so far are kept: run the same command again to resume") from None
    return {"actors": res["max_size"], "gpus_per_actor": res["num_gpus"], "blocks": blocks}


def _decode_task_args() -> dict:
    """The decode tasks' extra remote args (none: its being a function is what stops the fusion, see run_job)."""
    return {}


def _root_cause(e: BaseException) -> BaseException:
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = getattr(e, "cause", None) or e.__cause__
        if nxt is None or not isinstance(nxt, BaseException):
            break
        e = nxt
    return e
