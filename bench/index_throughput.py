#!/usr/bin/env python
"""Indexing throughput of imgsearch on camera-sized photos, end to end and per stage.

Generates its own photo folder (never timed): N camera-like 12-MP JPEGs (4000x3000, quality 90:
a low-res colour gradient upscaled + random shapes + per-pixel noise, so files are ~2-4 MB like
phone photos; every 3rd one carries EXIF orientation 6 and a capture date) plus some PNGs
(2400x1600 "screenshots": gradient + shapes + light noise, compress_level=1 to generate fast).

Then, each in a fresh child process (so CPU time and peak RSS are per configuration):

  pipeline  Library(db).index([folder]) with the shipped checkpoint on the CPU (scan, hash, draft
            decode in DataLoader workers, batched encoder + beam search + tags + photo embedding,
            batched MiniLM, SQLite + FTS5 writes, FAISS update). Models are loaded and warmed up
            first (load time reported separately). Instrumented by wrapping, in that same run,
            Captioner.encode / captions_from_grid / embed_images, tags_from_logits,
            TextEmbedder.embed, Store.write (the batch write transactions: photos, captions,
            tags, FTS5), search.caches.VectorCache.update (FAISS) and the DataLoader iterator (time the main
            process waits for decoded batches). Repeated for a few worker/batch/thread settings.
  stages    Each stage alone, sequentially, on the same photos in one process: decode_one (stat +
            SHA-256 + open_photo draft decode + EXIF + to_model_input), encoder, beam search,
            tags + photo embedding, MiniLM; plus JPEG decoding per 12-MP photo: Pillow draft only,
            open_photo, full-resolution decode + resize (the naive path), and `djpeg -scale 1/8`
            (libjpeg-turbo's own tool, run as a process per file: wall includes process start,
            which is also reported on its own; CPU from os.wait4).
  naive     The reference path: one image at a time, full-resolution decode (no draft), EXIF
            transpose, resize to 224, encoder, greedy decoding, tags + photo embedding, MiniLM per
            caption; no batching, no workers, no store writes (so the ratio is conservative).

Targets (issue "Performance"): pipeline >= 4x naive and >= 15 images/s for 12-MP JPEGs at beam 3 on
a 2-core CPU; open_photo JPEG decode <= 1.5x djpeg -scale 1/8.

    python bench/index_throughput.py                   # 96 JPEGs + 12 PNGs, default sweep
    python bench/index_throughput.py --n 16 --sweep default --naive-n 4    # smoke test
    python bench/index_throughput.py --device cuda --n 96 --sweep default --skip naive   # on a GPU (gpu_check.sh)

``--device cuda[:N]`` runs every job's models there (default: cpu, as always). The encoder then runs under float16
autocast: Captioner.encode always uses it on CUDA (there is no switch, so no --amp/--no-amp; the report says so). On
CUDA each timed model stage ends with torch.cuda.synchronize(), so its wall time is its own and not the next
stage's. ``--sweep gpu`` tries larger batches and more decode workers (for a GPU machine with many cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"

# ============================================================== shared helpers (query_latency imports these)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(mod: str) -> str:
    try:
        m = __import__(mod)
        return str(getattr(m, "__version__", "?"))
    except Exception:
        return "n/a"


def faiss_info() -> tuple[str, str | None]:
    """(faiss's version, the OpenBLAS kernels it uses here, e.g. 'SkylakeX'), faiss imported through imgsearch's
    loader (imgsearch/search/faiss_lib.py: a plain import first would leave OpenBLAS its own choice)."""
    try:
        from imgsearch.search import faiss_lib

        return str(getattr(faiss_lib.load(), "__version__", "?")), faiss_lib.blas_core()
    except Exception:
        return "n/a", None


def machine(with_torch: bool = True) -> dict:
    """platform, CPU model, cores, RAM, library versions, load average (the box may be busy)."""
    import sqlite3

    ram = ram_bytes()
    m = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "sqlite": sqlite3.sqlite_version,
        "numpy": _version("numpy"),
        **dict(zip(("faiss", "faiss_blas"), faiss_info())),
        "onnxruntime": _version("onnxruntime"),
        "pillow": _version("PIL"),
    }
    if with_torch:
        m["torch"] = _version("torch")
    return m


def gpu_info(device: str) -> dict:
    """The CUDA device the models will run on (ModelError/UserError from imgsearch.devices when there is none)."""
    import torch

    from imgsearch.devices import resolve_device

    dev = resolve_device(device)
    p = torch.cuda.get_device_properties(dev)
    return {"device": str(dev), "name": p.name, "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
            "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def print_machine(m: dict) -> None:
    print(f"machine: {m['platform']}; python {m['python']}; CPU {m['cpu_model']} x {m['cores']} cores; "
          f"RAM {m['ram_gib']} GiB; load avg {m['loadavg_1m_at_start']}", flush=True)
    libs = ", ".join(f"{k} {m[k]}" for k in ("torch", "faiss", "onnxruntime", "numpy", "pillow", "sqlite") if k in m)
    print(f"versions: {libs}", flush=True)
    if m.get("gpu"):
        g = m["gpu"]
        print(f"GPU: {g['name']} ({g['device']} of {g['count']}; capability {g['capability']}; {g['memory_gib']} GiB); "
              f"torch CUDA {g['torch_cuda']}, cuDNN {g['cudnn']}", flush=True)


def pct(xs, p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def median(xs) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def rusage() -> dict:
    """CPU seconds and peak RSS of this process and of its reaped children (DataLoader workers)."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_self_s": s.ru_utime + s.ru_stime,
        "cpu_children_s": c.ru_utime + c.ru_stime,
        "maxrss_self_mib": s.ru_maxrss / 1024,      # Linux: KiB
        "maxrss_children_mib": c.ru_maxrss / 1024,  # the largest single child, not a sum
    }


def dir_size(p: Path) -> int:
    p = Path(p)
    if p.is_file():
        return p.stat().st_size
    if not p.exists():
        return 0
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def write_json(name: str, data) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path


GNU_TIME = "/usr/bin/time"


def run_measured(cmd: list[str], env: dict | None = None, cwd=None, timeout: float | None = None) -> dict:
    """Run ``cmd``: wall seconds (spawn to exit), CPU seconds and peak RSS of that process, exit code,
    stdout and stderr.

    Peak RSS: Linux carries a process's ru_maxrss across fork and exec, so a child forked from this
    (large) benchmark process reports at least the benchmark's own RSS — measured that way the cold CLI
    at 1M photos showed 4.1 GB. The command therefore runs under GNU time (`/usr/bin/time -f %M`), a
    small process whose child starts from a small RSS; without GNU time, wait4's value is reported and
    flagged ("maxrss_method": "wait4, inflated by the parent")."""
    t = time.perf_counter()
    use_time = os.path.exists(GNU_TIME)
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as fr:
        full = [GNU_TIME, "-q", "-f", "%M", "-o", fr.name, *cmd] if use_time else cmd
        p = subprocess.Popen(full, stdout=fo, stderr=fe, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
        maxrss = ru.ru_maxrss / 1024
        if use_time:
            try:
                maxrss = int(open(fr.name).read().split()[-1]) / 1024
            except (OSError, ValueError, IndexError):
                use_time = False
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mib": maxrss,
            "maxrss_method": "GNU time %M of the command" if use_time else "wait4, inflated by the parent",
            "rc": p.returncode, "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}


def child(job: dict, timeout: float | None = None) -> dict:
    """Run one job of this script in a fresh Python process; its result is the last stdout line (JSON)."""
    r = run_measured([sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(job)], timeout=timeout)
    if r["rc"] != 0:
        raise RuntimeError(f"job {job.get('kind')} failed (exit {r['rc']}):\n{r['stderr'][-3000:]}")
    sys.stderr.write(r["stderr"][-2000:] if r["stderr"].strip() else "")
    lines = [ln for ln in r["stdout"].splitlines() if ln.strip()]
    res = json.loads(lines[-1])
    res["process"] = {k: r[k] for k in ("wall_s", "cpu_s", "maxrss_mib")}
    return res


# ============================================================== photo generation (not timed)

_FIELD = {}


def _gen_one(spec) -> None:
    """Write one photo (runs in a pool worker)."""
    import numpy as np
    from PIL import Image, ImageDraw

    path, i, png, seed, quality, W, H, noise = spec
    pad = 64
    r = np.random.default_rng([seed, i])
    w, h = (2400, 1600) if png else (W, H)
    # smooth colour field: a 4x3 random grid upscaled bicubically (sky/ground-like gradients)
    base = Image.fromarray(r.integers(0, 256, (3, 4, 3), dtype=np.uint8), "RGB").resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(base)
    for _ in range(int(r.integers(12, 30))):
        x0, y0 = int(r.integers(0, w)), int(r.integers(0, h))
        x1, y1 = x0 + int(r.integers(w // 30, w // 3)), y0 + int(r.integers(h // 30, h // 3))
        col = tuple(int(c) for c in r.integers(0, 256, 3))
        kind = int(r.integers(0, 3))
        if kind == 0:
            d.ellipse((x0, y0, x1, y1), fill=col)
        elif kind == 1:
            d.rectangle((x0, y0, x1, y1), fill=col)
        else:
            d.polygon([(x0, y0), (x1, y0 + (y1 - y0) // 3), ((x0 + x1) // 2, y1)], fill=col)
    arr = np.asarray(base)
    field = _FIELD.get((W, H, noise))
    if field is None:  # per-pixel sensor-like noise, one field per process, cropped at a random offset
        g = np.random.default_rng(seed)
        field = _FIELD[(W, H, noise)] = np.clip(g.normal(0, noise, (H + pad, W + pad, 3)), -127, 127).astype(np.int16)
    ox, oy = int(r.integers(0, pad)), int(r.integers(0, pad))
    nz = field[oy:oy + h, ox:ox + w]
    if png:
        nz = nz // 4
    arr = np.clip(arr.astype(np.int16) + nz, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    tmp = path + ".tmp"
    if png:
        im.save(tmp, "PNG", compress_level=1)
    else:
        exif = Image.Exif()
        exif[0x010F] = "BenchCam"
        exif[306] = f"2024:06:{1 + i % 28:02d} 12:{i % 60:02d}:00"
        if i % 3 == 0:
            exif[0x0112] = 6  # rotate 90 CW on display (portrait shot)
        im.save(tmp, "JPEG", quality=quality, exif=exif.tobytes())
    os.replace(tmp, path)


def generate_photos(folder: Path, n_jpeg: int, n_png: int, seed: int = 0, quality: int = 90,
                    size=(4000, 3000), noise: float = 7.0, procs: int | None = None) -> list[Path]:
    """Camera-like JPEGs and screenshot-like PNGs in ``folder`` (files already there are reused)."""
    from multiprocessing import get_context

    folder.mkdir(parents=True, exist_ok=True)
    out, todo = [], []
    for i in range(n_jpeg + n_png):
        png = i >= n_jpeg
        path = folder / (f"shot_{i:04d}.png" if png else f"IMG_{i:04d}.jpg")
        out.append(path)
        if not (path.exists() and path.stat().st_size > 0):
            todo.append((str(path), i, png, seed, quality, size[0], size[1], noise))
    if todo:
        procs = procs or min(len(todo), os.cpu_count() or 1)
        with get_context("spawn").Pool(procs) as pool:
            for k, _ in enumerate(pool.imap_unordered(_gen_one, todo), 1):
                if k % 16 == 0:
                    print(f"  generated {k}/{len(todo)}", flush=True)
    return out


# ============================================================== child jobs

def _sync(device: str) -> None:
    """On CUDA: wait for the queued kernels, so that a stage's wall time is its own (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _load_models(threads: int | None, device: str = "cpu"):
    import torch

    if threads:
        torch.set_num_threads(threads)
    from imgsearch.model.captioner import Captioner
    from imgsearch.text.embed import TextEmbedder

    t = time.perf_counter()
    cap = Captioner.load(None, device=device)
    emb = TextEmbedder.load()
    load_s = time.perf_counter() - t
    # warm-up: first oneDNN / ORT calls allocate and pick kernels
    with torch.inference_mode():
        x = torch.zeros(2, 3, cap.image_size, cap.image_size)
        cap.describe(x, beam=3, n_best=3)
    _sync(device)
    emb.embed(["a dog runs on the grass", "two people"])
    return cap, emb, load_s


def job_pipeline(job: dict) -> dict:
    """Library.index over the folder, instrumented (stage wall times inside the same run)."""

    from imgsearch import library as L
    from imgsearch.models import Models
    from imgsearch.search import caches
    from imgsearch.indexer import runner as R
    from imgsearch.model import captioner as C
    from imgsearch.model import tags as T
    from imgsearch.store import db as D
    from imgsearch.text import embed as E

    device = job.get("device", "cpu")
    cap, emb, load_s = _load_models(job.get("threads"), device)
    acc: dict[str, float] = {}
    calls: dict[str, int] = {}

    def wrap(owner, name, key):
        orig = getattr(owner, name)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                _sync(device)
                acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
                calls[key] = calls.get(key, 0) + 1
        setattr(owner, name, timed)

    wrap(C.Captioner, "encode", "encoder")
    wrap(C.Captioner, "captions_from_grid", "beam_search")
    wrap(C.Captioner, "embed_images", "photo_embedding")
    wrap(C.Captioner, "describe", "describe_total")
    wrap(E.TextEmbedder, "embed", "minilm")
    wrap(caches.VectorCache, "update", "faiss_update")
    orig_tags = C.__dict__.get("tags_from_logits")
    orig_tags_mod = T.tags_from_logits

    def tags_timed(*a, **kw):
        t = time.perf_counter()
        try:
            return orig_tags_mod(*a, **kw)
        finally:
            acc["tags"] = acc.get("tags", 0.0) + time.perf_counter() - t
    T.tags_from_logits = tags_timed
    if orig_tags is not None:
        C.tags_from_logits = tags_timed

    orig_write = D.Store.write

    import contextlib

    @contextlib.contextmanager
    def write_timed(self):
        t = time.perf_counter()
        try:
            with orig_write(self) as s:
                yield s
        finally:
            acc["store_write"] = acc.get("store_write", 0.0) + time.perf_counter() - t
            calls["store_write"] = calls.get("store_write", 0) + 1
    D.Store.write = write_timed

    orig_batches = R.batches
    stamps: list[tuple[float, int]] = []

    def batches_timed(*a, **kw):
        it = orig_batches(*a, **kw)
        while True:
            t = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                acc["wait_decode"] = acc.get("wait_decode", 0.0) + time.perf_counter() - t
                return
            acc["wait_decode"] = acc.get("wait_decode", 0.0) + time.perf_counter() - t
            yield b
    R.batches = batches_timed  # the name the runner calls

    workdir = Path(tempfile.mkdtemp(prefix="idxbench_"))
    try:
        db = workdir / "library.db"
        lib = L.Library(db, models=Models(device=device, captioner=cap, embedder=emb))
        ru0 = rusage()
        t0 = time.perf_counter()
        c0 = time.process_time()

        def progress(done, total):
            stamps.append((time.perf_counter() - t0, done))

        report = lib.index([job["folder"]], batch_size=job["batch"], workers=job["workers"], beam=job["beam"],
                           progress=progress)
        wall = time.perf_counter() - t0
        ru1 = rusage()
        st = lib.status()
        lib.close()
        sizes = {p.name: p.stat().st_size for p in workdir.iterdir() if p.is_file()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    n = report.added + report.updated
    steady = None
    firsts = [s for s in stamps if s[1] > 0]
    if len(firsts) >= 2 and firsts[-1][1] > firsts[0][1]:
        steady = (firsts[-1][1] - firsts[0][1]) / (firsts[-1][0] - firsts[0][0])
    return {
        "kind": "pipeline", "settings": {k: job[k] for k in ("workers", "batch", "beam", "threads")},
        "device": str(cap.device),
        "torch_threads": __import__("torch").get_num_threads(),
        "photos": n, "failed": report.failed, "errors": report.errors[:5],
        "model_load_s": load_s, "wall_s": wall, "images_per_s": n / wall if wall else None,
        "steady_images_per_s": steady,
        "cpu_main_s": time.process_time() - c0,
        "cpu_workers_s": ru1["cpu_children_s"] - ru0["cpu_children_s"],
        "maxrss_main_mib": ru1["maxrss_self_mib"], "maxrss_worker_mib": ru1["maxrss_children_mib"],
        "stage_wall_s": acc, "stage_calls": calls, "db_photos": st["photos"], "library_bytes": sizes,
    }


def job_stages(job: dict) -> dict:
    """Each stage alone, sequentially, in this process (torch threads as configured)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    from imgsearch.indexer import decode as dec
    from imgsearch.indexer.loader import decode_one
    from imgsearch.model.preprocess import fit_square, to_tensor
    from imgsearch.model.tags import tags_from_logits
    from imgsearch.text.normalize import keywords
    from imgsearch.text.caption_vectors import caption_vectors

    device = job.get("device", "cpu")
    cap, emb, load_s = _load_models(job.get("threads"), device)
    paths = job["paths"]
    jpegs = [p for p in paths if p.lower().endswith(".jpg")]
    size, resize = cap.image_size, cap.resize
    res: dict = {"kind": "stages", "torch_threads": torch.get_num_threads(), "model_load_s": load_s}

    def per_item(fn, items, reps=1):
        ws, cs = [], []
        for it in items:
            for _ in range(reps):
                t, c = time.perf_counter(), time.thread_time()
                fn(it)
                ws.append(time.perf_counter() - t)
                cs.append(time.thread_time() - c)
        return {"median_ms": median(ws) * 1e3, "p95_ms": pct(ws, 95) * 1e3, "cpu_median_ms": median(cs) * 1e3,
                "n": len(ws)}

    # ---- decoding (the pipeline's decode_one: stat + sha256 + open_photo + to_model_input)
    tensors = []

    def dec_one(p):
        t, _ = decode_one(p, size, resize)
        tensors.append(t)
    res["decode_one_all"] = per_item(dec_one, paths)
    images = torch.stack(tensors)

    from imgsearch.indexer.scan import content_hash
    res["sha256"] = per_item(content_hash, jpegs)

    def draft_only(p):
        with Image.open(p) as im:
            im.draft("RGB", (size, size))
            im.load()
    res["jpeg_draft_only"] = per_item(draft_only, jpegs)
    res["jpeg_open_photo"] = per_item(lambda p: dec.open_photo(p, target=size), jpegs)
    res["jpeg_open_photo_to_tensor"] = per_item(
        lambda p: dec.to_model_input(dec.open_photo(p, target=size), size, resize), jpegs)

    def full_decode(p):
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            to_tensor(fit_square(im, size, resize))
    res["jpeg_full_decode_resize"] = per_item(full_decode, jpegs[: job.get("full_n", 24)])

    djpeg = shutil.which("djpeg")
    if djpeg:
        tiny = Path(tempfile.mkdtemp(prefix="djpeg_")) / "tiny.jpg"
        Image.new("RGB", (16, 16), (128, 64, 32)).save(tiny, quality=90)
        ws, cs, ws0 = [], [], []
        for p in jpegs:
            r = run_measured([djpeg, "-scale", "1/8", "-outfile", os.devnull, p])
            ws.append(r["wall_s"])
            cs.append(r["cpu_s"])
        for _ in range(max(10, len(jpegs) // 4)):
            ws0.append(run_measured([djpeg, "-outfile", os.devnull, str(tiny)])["wall_s"])
        shutil.rmtree(tiny.parent, ignore_errors=True)
        res["djpeg_scale_1_8"] = {"median_ms": median(ws) * 1e3, "p95_ms": pct(ws, 95) * 1e3,
                                  "cpu_median_ms": median(cs) * 1e3, "n": len(ws),
                                  "process_start_median_ms": median(ws0) * 1e3,
                                  "net_median_ms": (median(ws) - median(ws0)) * 1e3,
                                  "version": subprocess.run([djpeg, "-version"], capture_output=True,
                                                            text=True).stderr.strip()[:120]}
    else:
        res["djpeg_scale_1_8"] = None

    # ---- model stages, batched like the pipeline
    B = job["batch"]
    beam = job["beam"]
    n = len(images)
    acc = {"encoder": 0.0, "beam_search": 0.0, "greedy": 0.0, "tags_keywords": 0.0, "photo_embedding": 0.0,
           "minilm": 0.0}
    cpu = dict.fromkeys(acc, 0.0)
    best: list[str] = []
    with torch.inference_mode():
        for i in range(0, n, B):
            x = images[i:i + B]

            def t(key, fn):
                w, c = time.perf_counter(), time.process_time()
                out = fn()
                _sync(device)
                acc[key] += time.perf_counter() - w
                cpu[key] += time.process_time() - c
                return out
            grid, logits = t("encoder", lambda: cap.encode(x))
            caps = t("beam_search", lambda: cap.captions_from_grid(grid, beam=beam, n_best=3))
            t("greedy", lambda: cap.captions_from_grid(grid, beam=0))

            def tk():
                tg = tags_from_logits(logits.float().cpu().numpy(), threshold=cap.tag_threshold)
                [keywords([c for c, _ in caps[j]] + [w for w, _ in tg[j]]) for j in range(len(caps))]
                return tg
            tg = t("tags_keywords", tk)
            if cap.projection is not None:
                t("photo_embedding", lambda: cap.embed_images(grid))
            best += [c[0][0] for c in caps]
            # the caption vector the pipeline stores: the 3-best captions + the tag words (text/caption_vectors.py)
            t("minilm", lambda: caption_vectors(emb, [[c for c, _ in cs] for cs in caps],
                                                [[w for w, _ in g] for g in tg]))
    res["model_stages_ms_per_image"] = {k: v / n * 1e3 for k, v in acc.items()}
    res["model_stages_cpu_ms_per_image"] = {k: v / n * 1e3 for k, v in cpu.items()}
    res["batch"], res["beam"], res["images"] = B, beam, n
    res["caption_words_mean"] = float(np.mean([len(c.split()) for c in best])) if best else None
    res["example_captions"] = best[:3]
    return res


def job_naive(job: dict) -> dict:
    """One image at a time: full decode, resize, PyTorch encoder, greedy, tags, photo embedding, MiniLM per caption."""
    import torch
    from PIL import Image, ImageOps

    from imgsearch.model.preprocess import fit_square, to_tensor
    from imgsearch.model.tags import tags_from_logits
    from imgsearch.text.normalize import keywords

    cap, emb, load_s = _load_models(job.get("threads"), job.get("device", "cpu"))
    cap.encoder_backend = "torch"   # the design document's path: the PyTorch encoder
    size, resize = cap.image_size, cap.resize
    paths = job["paths"]
    ws = []
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for p in paths:
            t = time.perf_counter()
            with Image.open(p) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                x = to_tensor(fit_square(im, size, resize))[None]
            grid, logits = cap.encode(x)
            caption = cap.captions_from_grid(grid, beam=0)[0][0][0]
            tg = tags_from_logits(logits.float().cpu().numpy(), threshold=cap.tag_threshold)[0]
            keywords([caption] + [w for w, _ in tg])
            if cap.projection is not None:
                cap.embed_images(grid)
            emb.embed([caption])
            ws.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"kind": "naive", "images": len(paths), "wall_s": wall, "images_per_s": len(paths) / wall,
            "median_ms_per_image": median(ws) * 1e3, "cpu_s": time.process_time() - c0,
            "torch_threads": torch.get_num_threads(), "model_load_s": load_s}


# ============================================================== main

SWEEPS = {
    # name: (workers, batch, main-process torch threads or None = torch default)
    "default": [(None, 32, None)],
    "full": [(None, 32, None), (1, 32, None), (2, 32, 1), (0, 32, None), (2, 64, None)],
    # a GPU machine: larger batches, more decode workers (bench/gpu_check.sh)
    "gpu": [(None, 32, None), (None, 128, None), (8, 128, None), (14, 256, None)],
    "wide": [(None, 32, None), (0, 32, None), (1, 32, None), (3, 32, None), (2, 32, 1), (1, 32, 1),
             (2, 16, None), (2, 64, None)],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="number of 12-MP JPEGs (default 96)")
    ap.add_argument("--png", type=int, default=None, help="number of PNG screenshots (default n/8)")
    ap.add_argument("--photos", help="photo folder to generate into / reuse (default: a temp dir, removed)")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="batch size of the stage-isolation run")
    ap.add_argument("--sweep", default="full", choices=sorted(SWEEPS),
                    help="pipeline settings to run: 'default' (Library defaults only) or 'full' (workers/batch/threads)")
    ap.add_argument("--naive-n", type=int, default=32, help="photos for the naive reference path (JPEGs)")
    ap.add_argument("--full-n", type=int, default=24, help="JPEGs for the full-resolution decode timing")
    ap.add_argument("--device", default="cpu", help="where the models run: cpu (default) | cuda | cuda:N")
    ap.add_argument("--skip", nargs="*", default=[], choices=["pipeline", "stages", "naive"])
    ap.add_argument("--json", default=str(RESULTS / "index_throughput.json"), help="result file")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        job = json.loads(args._child)
        fn = {"pipeline": job_pipeline, "stages": job_stages, "naive": job_naive}[job["kind"]]
        print(json.dumps(fn(job), default=str))
        return

    n_png = args.n // 8 if args.png is None else args.png
    from imgsearch.devices import parse_device, resolve_device
    from imgsearch.errors import ImgsearchError

    m = machine()
    try:
        device = str(resolve_device(parse_device(args.device)))    # auto: cuda when torch sees a GPU
        if device != "cpu":
            m["gpu"] = gpu_info(device)
    except ImgsearchError as e:      # no such GPU here: one line, before generating photos
        sys.exit(f"index_throughput.py: {e}")
    print_machine(m)
    where = ("CPU only" if device == "cpu" else
             f"device {device} ({m['gpu']['name']}; encoder under float16 autocast, always on for CUDA)")
    print(f"settings: {args.n} JPEGs 4000x3000 q90 (1/3 with EXIF orientation 6) + {n_png} PNGs 2400x1600; "
          f"beam {args.beam}; {where}; sweep {args.sweep}; naive on {args.naive_n} JPEGs", flush=True)
    keep = args.photos is not None
    folder = Path(args.photos) if keep else Path(tempfile.mkdtemp(prefix="idxbench_photos_"))
    t = time.perf_counter()
    paths = generate_photos(folder, args.n, n_png)
    jpeg_sizes = [p.stat().st_size for p in paths if p.suffix == ".jpg"]
    png_sizes = [p.stat().st_size for p in paths if p.suffix == ".png"]
    print(f"photos in {folder} (generated/reused in {time.perf_counter() - t:.0f} s, not timed): JPEG median "
          f"{median(jpeg_sizes) / 1e6:.2f} MB (min {min(jpeg_sizes) / 1e6:.2f}, max {max(jpeg_sizes) / 1e6:.2f}), "
          f"PNG median {median(png_sizes) / 1e6 if png_sizes else 0:.2f} MB", flush=True)
    out = {"machine": m, "settings": {"n_jpeg": args.n, "n_png": n_png, "beam": args.beam, "sweep": args.sweep,
                                      "naive_n": args.naive_n, "jpeg_mb_median": median(jpeg_sizes) / 1e6,
                                      "png_mb_median": median(png_sizes) / 1e6 if png_sizes else None,
                                      "device": device,
                                      "amp": "float16 autocast (Captioner.encode, always on CUDA)" if device != "cpu"
                                      else None},
           "pipeline": [], "stages": None, "naive": None}
    try:
        if "pipeline" not in args.skip:
            for workers, batch, threads in SWEEPS[args.sweep]:
                job = {"kind": "pipeline", "folder": str(folder), "workers": workers, "batch": batch,
                       "beam": args.beam, "threads": threads, "device": device}
                r = child(job)
                out["pipeline"].append(r)
                sw = r["stage_wall_s"]
                print(f"pipeline workers={workers if workers is not None else 'default'} batch={batch} "
                      f"main threads={r['torch_threads']}: {r['photos']} photos in {r['wall_s']:.1f} s = "
                      f"{r['images_per_s']:.2f} img/s (steady {r['steady_images_per_s'] or 0:.2f}); CPU main "
                      f"{r['cpu_main_s']:.1f} s + workers {r['cpu_workers_s']:.1f} s; peak RSS main "
                      f"{r['maxrss_main_mib']:.0f} MiB, worker {r['maxrss_worker_mib']:.0f} MiB; "
                      f"stages (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in sw.items()), flush=True)
                write_json(Path(args.json).name, out) if Path(args.json).parent == RESULTS else None
        if "stages" not in args.skip:
            r = child({"kind": "stages", "paths": [str(p) for p in paths], "batch": args.batch, "beam": args.beam,
                       "threads": None, "full_n": args.full_n, "device": device})
            out["stages"] = r
            print(f"stages alone (one process, {r['torch_threads']} torch threads), ms per photo, median "
                  f"(CPU median):", flush=True)
            for k in ("decode_one_all", "sha256", "jpeg_draft_only", "jpeg_open_photo", "jpeg_open_photo_to_tensor",
                      "jpeg_full_decode_resize", "djpeg_scale_1_8"):
                v = r.get(k)
                if v:
                    extra = (f"; process start {v['process_start_median_ms']:.1f} ms, net {v['net_median_ms']:.1f} ms"
                             if "process_start_median_ms" in v else "")
                    print(f"  {k:28s} {v['median_ms']:7.1f} ({v['cpu_median_ms']:.1f} CPU)  p95 {v['p95_ms']:.1f}  "
                          f"n={v['n']}{extra}", flush=True)
            print(f"  model stages at batch {r['batch']}, beam {r['beam']}, ms per image: " + ", ".join(
                f"{k} {v:.1f}" for k, v in r["model_stages_ms_per_image"].items()), flush=True)
            print(f"  captions e.g. {r['example_captions']}", flush=True)
        if "naive" not in args.skip:
            jp = [str(p) for p in paths if p.suffix == ".jpg"][: args.naive_n]
            r = child({"kind": "naive", "paths": jp, "threads": None, "device": device})
            out["naive"] = r
            print(f"naive reference: {r['images']} JPEGs in {r['wall_s']:.1f} s = {r['images_per_s']:.2f} img/s "
                  f"(median {r['median_ms_per_image']:.0f} ms/photo, CPU {r['cpu_s']:.1f} s)", flush=True)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    summary = summarize(out)
    out["summary"] = summary
    for line in summary["lines"]:
        print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")


def summarize(out: dict) -> dict:
    s: dict = {"lines": []}
    L = s["lines"]
    pipe = out["pipeline"]
    default = next((r for r in pipe if r["settings"]["workers"] is None and r["settings"]["batch"] == 32
                    and r["settings"]["threads"] is None), pipe[0] if pipe else None)
    naive = out.get("naive")
    if default:
        s["default_images_per_s"] = default["images_per_s"]
        L.append(f"TARGET >= 15 img/s (12-MP JPEG+PNG mix, beam {default['settings']['beam']}): "
                 f"{default['images_per_s']:.2f} img/s -> {'MET' if default['images_per_s'] >= 15 else 'NOT MET'}")
        best = max(pipe, key=lambda r: r["images_per_s"])
        s["best"] = {"settings": best["settings"], "images_per_s": best["images_per_s"]}
        L.append(f"best setting: {best['settings']} -> {best['images_per_s']:.2f} img/s")
        if naive:
            ratio = default["images_per_s"] / naive["images_per_s"]
            s["speedup_vs_naive"] = ratio
            L.append(f"TARGET >= 4x naive: {default['images_per_s']:.2f} / {naive['images_per_s']:.2f} = {ratio:.2f}x "
                     f"-> {'MET' if ratio >= 4 else 'NOT MET'}")
    st = out.get("stages")
    if st and st.get("djpeg_scale_1_8"):
        ours = st["jpeg_open_photo"]["median_ms"]
        dj = st["djpeg_scale_1_8"]
        r1 = ours / dj["median_ms"]
        r2 = ours / max(1e-6, dj["net_median_ms"])
        rc = st["jpeg_open_photo"]["cpu_median_ms"] / max(1e-6, dj["cpu_median_ms"])
        s["decode_vs_djpeg"] = {"wall_ratio": r1, "wall_ratio_net_of_process_start": r2, "cpu_ratio": rc}
        L.append(f"TARGET open_photo <= 1.5x djpeg -scale 1/8: {ours:.1f} ms vs {dj['median_ms']:.1f} ms "
                 f"({dj['net_median_ms']:.1f} ms net of process start; CPU {st['jpeg_open_photo']['cpu_median_ms']:.1f}"
                 f" vs {dj['cpu_median_ms']:.1f} ms) = {r1:.2f}x wall / {r2:.2f}x net / {rc:.2f}x CPU -> "
                 f"{'MET' if r2 <= 1.5 else 'NOT MET'} (judged on net wall)")
    return s


if __name__ == "__main__":
    main()
