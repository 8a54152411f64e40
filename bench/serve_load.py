#!/usr/bin/env python
"""Load test of `imgsearch serve`: search throughput and latency with 1 and 8 concurrent clients.

A synthetic library of --photos photos is written straight into a real library database the way
bench/query_latency.py does (real MiniLM caption vectors of recombined Flickr8k phrases, drawn photo and
label vectors, captions/keywords/tags/FTS5 documents, re-ranking cells under the shipped checkpoint's
version, empty stub photo files), without running the captioner; it is kept in --workdir and reused
by later runs (--rebuild to make it again). The real server (`imgsearch serve --db DB --port 0`, a
subprocess listening on 127.0.0.1 only; once per --workers setting, `serve --workers N`) is started on it,
warmed, and each client level runs
--requests `GET /api/search?q=<dev caption>&mode=<mode>&k=<k>` requests from that many threads (one
keep-alive http.client connection each, the requests shared out from one counter). Levels run
--rounds times interleaved (1, 8, 1, 8 ...); the medians over rounds are reported. With --baseline-code
DIR (e.g. a copy of the package without a change) each round also serves the library from that code, for
a before/after comparison under the same load. A CPU probe (two GIL-free threads) says how many cores the
box gave this process at the start and the end, and each level says how many cores other processes took
while it ran ("others", from /proc/stat: ~0 on an idle box): other people's jobs change the figures.

Printed and saved (bench/results/serve_load.{txt,json}): the machine, the settings, per level and
round req/s, p50, p95, max, errors, server CPU (the server and its workers), RSS of each process; the medians;
and per setting the issue-13 target: 8 clients give >= 1.5x the throughput of 1 client with no errors (the exit
status: the last --workers setting); also whether their p95 < 4x one client's p50 (not reachable on 2 cores:
README, "Load test").

The clients run in this process and share the machine's cores with the server: on 2 cores the load
generator itself costs a few percent.

    python bench/serve_load.py --requests 300     # 10k photos, --workers 1 and 2, 1 and 8 clients, 3 rounds
    python bench/serve_load.py --photos 2000 --requests 60 --rounds 1   # smoke test
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

_OMP = os.environ.get("OMP_NUM_THREADS")
from bm25_engines import load_captions  # noqa: E402  (sets OMP_NUM_THREADS=1 for itself: undone below)

if _OMP is None:
    os.environ.pop("OMP_NUM_THREADS", None)
else:
    os.environ["OMP_NUM_THREADS"] = _OMP
from index_throughput import RESULTS, machine, median, pct, print_machine  # noqa: E402
from query_latency import Corpus, build_library, make_templates, prepare_reranking  # noqa: E402

READY = re.compile(r"open (http://127\.0\.0\.1:(\d+)/)")


# ============================================================== the library

def ensure_library(args) -> Path:
    """The synthetic library at --workdir/lib_N (built unless it is there and complete)."""
    workdir = Path(args.workdir) / f"lib_{args.photos}"
    db = workdir / "library.db"
    done = workdir / "BUILT"
    if done.is_file() and db.is_file() and not args.rebuild:
        print(f"library: reusing {db} ({done.read_text().strip()})", flush=True)
        return db
    if workdir.exists():
        shutil.rmtree(workdir)
    from imgsearch.text.embed import TextEmbedder

    t = time.perf_counter()
    corpus = Corpus(args.seed)
    pool = corpus.pool(args.pool)
    templates = make_templates(corpus, pool, args.variants)
    emb = TextEmbedder.load()
    pool_emb = np.asarray(emb.embed([" ".join(p) for p in pool], batch_size=256), dtype=np.float32)
    version, cells = prepare_reranking(args.cell_bank, args.seed) if args.cell_bank else ("captioner-synthetic0000",
                                                                                          None)
    b = build_library(args.photos, workdir, templates, args.variants, pool_emb, emb.version, args.seed,
                      model_version=version, cell_bank=cells)
    from imgsearch.library import Library

    with Library(db, create=False) as lib:   # the FAISS files and the BM25 cache, as a first query would
        lib.refresh_caches()
    done.write_text(f"{args.photos} photos, pool {args.pool}, seed {args.seed}, built in "
                    f"{time.perf_counter() - t:.0f} s\n")
    print(f"library: built {db} in {time.perf_counter() - t:.0f} s (store {b['store_build_s']:.1f} s)", flush=True)
    return db


# ============================================================== the server

class Server:
    """`imgsearch serve --db DB --port 0` in a subprocess (loopback only); .port once ready."""

    def __init__(self, db: Path, timeout: float = 300, code: Path = ROOT, workers: int | None = None):
        exe = shutil.which("imgsearch", path=str(Path(sys.executable).parent)) or "imgsearch"
        more = ["--workers", str(workers)] if workers is not None else []   # None: the server's default
        self.proc = subprocess.Popen([exe, "serve", "--db", str(db), "--host", "127.0.0.1", "--port", "0", *more],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(code)))
        self.log: list[str] = []
        deadline = time.monotonic() + timeout
        self.port = None
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("the server exited before it was ready:\n" + "".join(self.log[-30:]))
            self.log.append(line)
            m = READY.search(line)
            if m:
                self.port = int(m.group(2))
            elif time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server was not ready in time")
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ============================================================== the clients

def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a `serve --workers N` server's workers), from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int(_stat(int(d.name))[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_seconds(pid: int, tree: list[int] | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) and of the processes ``tree`` so far;
    nan where /proc is not there."""
    try:
        total = 0.0
        for p in (pid, *(tree or ())):
            fields = _stat(p)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total
    except (OSError, ValueError, IndexError):
        return float("nan")


def box_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (all cores, /proc/stat); nan where it is not there."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait
    except (OSError, ValueError, IndexError):
        return float("nan")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return float("nan")


def cores_available(seconds: float = 0.6) -> float:
    """Cores two GIL-free threads (1-thread BLAS matrix products) get right now: ~2.0 on an idle 2-core box,
    ~1.0 when someone else keeps a core busy. Tells whether concurrency could pay off at all."""
    a = np.random.default_rng(0).random((300, 300))

    def work(until: float):
        while time.perf_counter() < until:
            a @ a

    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=work, args=(until,)) for _ in range(2)]
    t, c = time.perf_counter(), time.process_time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.process_time() - c) / (time.perf_counter() - t)


def run_level(port: int, queries: list[str], clients: int, n_requests: int, mode: str, k: int,
              timeout: float, server_pid: int | None = None) -> dict:
    """``n_requests`` searches from ``clients`` threads (one keep-alive connection each)."""
    lock = threading.Lock()
    nxt = [0]
    lat: list[float] = []
    errors: list[str] = []

    def take() -> int | None:
        with lock:
            if nxt[0] >= n_requests:
                return None
            nxt[0] += 1
            return nxt[0] - 1

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            while (i := take()) is not None:
                q = queries[i % len(queries)]
                url = "/api/search?" + urllib.parse.urlencode({"q": q, "mode": mode, "k": k})
                t = time.perf_counter()
                try:
                    conn.request("GET", url)
                    r = conn.getresponse()
                    body = r.read()
                    dt = time.perf_counter() - t
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
                    json.loads(body)
                    with lock:
                        lat.append(dt)
                except Exception as e:  # noqa: BLE001 - any failure is counted and reported
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    tree = children(server_pid) if server_pid else []
    cpu0 = cpu_seconds(server_pid, tree) if server_pid else float("nan")
    own0 = time.process_time()
    box0 = box_busy_seconds()
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu = (cpu_seconds(server_pid, tree) if server_pid else float("nan")) - cpu0
    own = time.process_time() - own0
    others = box_busy_seconds() - box0 - own - (cpu if cpu == cpu else 0.0)
    return {"clients": clients, "requests": n_requests, "ok": len(lat), "errors": len(errors),
            "error_samples": errors[:5], "wall_s": round(wall, 3), "req_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(pct(lat, 50) * 1e3, 2), "p95_ms": round(pct(lat, 95) * 1e3, 2),
            "max_ms": round(max(lat) * 1e3, 2) if lat else None,
            "server_cpu_ms_per_request": round(cpu / max(len(lat), 1) * 1e3, 2),
            "server_cores_busy": round(cpu / wall, 2), "client_cpu_ms_per_request": round(own / max(len(lat), 1) * 1e3, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "other_cores_busy": round(others / wall, 2),   # what other people's jobs took meanwhile: ~0 on an idle box
            "server_rss_mib": [round(rss_mib(p)) for p in ([server_pid] if server_pid else []) + tree]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=10_000)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="`serve --workers N` settings, each "
                    "measured in every round")
    ap.add_argument("--requests", type=int, default=400, help="requests per level and round")
    ap.add_argument("--rounds", type=int, default=3, help="each level this many times, interleaved")
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--k", type=int, default=24, help="results per search (the page asks for 24)")
    ap.add_argument("--warmup", type=int, default=30, help="requests before measuring (not counted)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    ap.add_argument("--pool", type=int, default=3000, help="distinct best captions embedded with MiniLM")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--cell-bank", type=int, default=256, help="random re-ranking cell grids (0: no re-ranking)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/imgsearch_serve_load", help="where the library is built and kept")
    ap.add_argument("--rebuild", action="store_true", help="build the library again even if it is there")
    ap.add_argument("--server-code", default=str(ROOT), help="the checkout the server runs (PYTHONPATH), e.g. a "
                    "copy without the change, for a before/after comparison")
    ap.add_argument("--baseline-code", help="a second checkout to measure the same way in each round (before/after)")
    ap.add_argument("--out", default=str(RESULTS / "serve_load"), help="writes OUT.json and OUT.txt")
    args = ap.parse_args(argv)

    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    m = machine(with_torch=False)
    print_machine(m)
    lines.append(f"machine: {m['platform']}; python {m['python']}; CPU {m['cpu_model']} x {m['cores']} cores; "
                 f"RAM {m['ram_gib']} GiB; load avg at start {m['loadavg_1m_at_start']}")
    db = ensure_library(args)
    dev = load_captions("dev")
    queries = random.Random(args.seed + 1).sample(dev, min(len(dev), 2000))
    say(f"settings: {args.photos:,} photos; mode {args.mode}, k={args.k}; clients {args.clients}; "
        f"{args.requests} requests per level x {args.rounds} rounds (interleaved); {len(queries)} Flickr8k dev "
        f"captions as queries; server `imgsearch serve` on 127.0.0.1 in a subprocess; clients: threads here")

    # (label, checkout, workers): each measured in every round, in turn (reversed in every other round)
    codes = {}
    for n in args.workers:
        codes[f"this checkout, {n} worker{'s' if n > 1 else ''}"] = (Path(args.server_code), n)
    if args.baseline_code:   # run as it is (it may not have --workers)
        codes["baseline"] = (Path(args.baseline_code), None)
    out = {"machine": m, "settings": {k: v for k, v in vars(args).items()}, "runs": []}
    probe0 = cores_available()
    say(f"CPU probe: two GIL-free threads here got {probe0:.2f} cores (2.0 = the box is idle)")
    start = 0
    for rnd in range(args.rounds):
        for label, (code, workers) in (list(codes.items()) if rnd % 2 == 0 else list(codes.items())[::-1]):
            t = time.perf_counter()
            srv = Server(db, code=code, workers=workers)
            say(f"round {rnd + 1}, {label} ({code}): server ready in {time.perf_counter() - t:.1f} s")
            try:
                warm = run_level(srv.port, queries[-args.warmup:] or queries, 2, args.warmup, args.mode, args.k,
                                 args.timeout)
                if warm["errors"]:
                    say(f"  warm-up: {warm['errors']} errors, e.g. {warm['error_samples'][0]}")
                for c in args.clients:
                    qs = queries[start:] + queries[:start]
                    r = run_level(srv.port, qs, c, args.requests, args.mode, args.k, args.timeout, srv.proc.pid)
                    r.update(round=rnd + 1, code=label)
                    out["runs"].append(r)
                    say(f"  {c} client{'s' if c > 1 else ' '}  {r['req_per_s']:7.1f} req/s  p50 "
                        f"{r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms  errors "
                        f"{r['errors']}; server CPU {r['server_cpu_ms_per_request']:.1f} ms/request, "
                        f"{r['server_cores_busy']:.2f} cores busy, others {r['other_cores_busy']:.2f}; RSS MiB "
                        f"{'+'.join(str(x) for x in r['server_rss_mib'])}"
                        + (f"  e.g. {r['error_samples'][0]}" if r["error_samples"] else ""))
            finally:
                rc = srv.stop()
            if rc:
                say(f"  server exit {rc}: {''.join(srv.log[-5:])}")
        start = (start + args.requests) % len(queries)
    probe1 = cores_available()
    say(f"CPU probe at the end: {probe1:.2f} cores")
    out["cores_available_probe"] = [round(probe0, 2), round(probe1, 2)]

    out["median"] = {}
    verdict = None
    for label in codes:
        med = {}
        for c in args.clients:
            rs = [r for r in out["runs"] if r["clients"] == c and r["code"] == label]
            med[c] = {key: median([r[key] for r in rs]) for key in ("req_per_s", "p50_ms", "p95_ms",
                                                                     "server_cpu_ms_per_request", "server_cores_busy",
                                                                     "other_cores_busy")}
            med[c]["errors"] = sum(r["errors"] for r in rs)
            say(f"median of {len(rs)}, {label:24s}: {c} client{'s' if c > 1 else ' '}  {med[c]['req_per_s']:7.1f} "
                f"req/s  p50 {med[c]['p50_ms']:7.1f} ms  p95 {med[c]['p95_ms']:7.1f} ms  errors {med[c]['errors']}  "
                f"server CPU {med[c]['server_cpu_ms_per_request']:.1f} ms/request, "
                f"{med[c]['server_cores_busy']:.2f} cores; "
                f"others {med[c]['other_cores_busy']:.2f} cores")
        out["median"][label] = {str(c): v for c, v in med.items()}
        if 1 in med and 8 in med:
            speedup = med[8]["req_per_s"] / med[1]["req_per_s"]
            ratio = med[8]["p95_ms"] / med[1]["p50_ms"]
            errors = med[1]["errors"] + med[8]["errors"]
            met = speedup >= 1.5 and errors == 0
            v = {"throughput_8_over_1": round(speedup, 2), "p95_8_over_p50_1": round(ratio, 2),
                 "errors": errors, "met": met, "p95_met": ratio < 4}
            out.setdefault("targets", {})[label] = v
            if label.startswith("this checkout"):
                verdict = v    # the last (largest) --workers setting decides the exit status
            say(f"TARGET ({label}) 8 clients >= 1.5x the req/s of 1, no errors: {speedup:.2f}x, errors {errors} "
                f"-> {'MET' if met else 'NOT MET'}; p95(8) < 4x p50(1): {ratio:.2f}x -> "
                f"{'met' if ratio < 4 else 'not met'}")
    out["target"] = verdict
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    Path(f"{args.out}.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json and {args.out}.txt")
    return 0 if verdict is None or verdict["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
