"""imgsearch index --engine ray beyond one Ray process: a two-node cluster on this machine (``ray start --head`` plus
a second ``ray start --address``), and a driver killed with SIGKILL half-way then run again.

Each test runs the real CLI in a subprocess. The Ray processes a test starts are its own: started in their own
process group with their own temp folder, and killed by those (group id, then any process naming the folder) in a
finalizer, also when the test fails or times out; never ``ray stop``, which would stop every Ray on the machine.
Skipped, with the reason, where Ray cannot be imported (pip install 'imgsearch[ray]').
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'imgsearch[ray]' to run the Ray tests")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (it comes with imgsearch[ray])")

from imgsearch import Library                 # noqa: E402
from imgsearch.cluster import shards          # noqa: E402
from libtools import ROOT, alarm, rows, tiny_captioner  # noqa: E402
from photos import make_photo                 # noqa: E402
from test_ray_index import KINDS, assert_same, make_photos, snapshot  # noqa: E402

pytestmark = pytest.mark.ray
TIMEOUT_S = 120
BIN = Path(sys.executable).parent
# `ray start` turns token authentication on by default (Ray 2.60); the drivers here would need the token
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(autouse=True)
def _timeout():
    """A hung Ray pipeline fails the test (SIGALRM) instead of blocking the suite."""
    with alarm(TIMEOUT_S, "Ray test (a hung pipeline?)"):
        yield


def short_tmp(prefix: str) -> Path:
    """A short folder under /tmp: Ray's socket paths (temp folder + session + sockets/...) must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def kill_ray(groups: list[int], marker: str) -> list[int]:
    """SIGKILL the process groups started here, then every process whose command line or environment names
    ``marker`` (a temp folder of this test, given as RAY_TMPDIR: the Ray processes of an instance it started — a
    Ray worker renames itself "ray::..." and keeps no folder in its command line, but inherits the environment);
    returns the pids still there after 10 s."""
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def named() -> list[int]:
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                try:
                    if any(marker in (p / f).read_bytes().decode(errors="replace") for f in ("cmdline", "environ")):
                        out.append(int(p.name))
                except OSError:
                    pass
        return out

    for _ in range(50):
        left = named()
        if not left:
            return []
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return named()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN / "imgsearch"), *args], env=kw.pop("env", ENV), capture_output=True, text=True,
                       cwd=ROOT, **kw)
    if check:
        assert p.returncode == 0, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p


def task_names(temp_dir: Path) -> set[str]:
    """The Ray tasks and actors that ran on the node whose temp folder is ``temp_dir``: the ``:task_name:`` and
    ``:actor_name:`` lines Ray writes at the top of each worker's log, for its log monitor."""
    names = set()
    for f in temp_dir.glob("session_*/logs/worker-*.out"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith((":task_name:", ":actor_name:")):
                names.add(line.split(":", 2)[2])
    return names


def shard_rows(run: Path) -> int:
    """Rows in the whole shard files of ``run`` now: only the footers are read (fast enough to poll; reading the
    rows, pyarrow's first read_table imports its dataset module, ~1 s on a busy box)."""
    n = 0
    for f in run.glob("shards/*/*.parquet"):
        try:
            n += pq.read_metadata(f).num_rows
        except (OSError, ValueError):   # being written: no footer yet
            pass
    return n


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(folder, checkpoint, reference db): 9 drawn photos (one a copy of another) and a bad file, the tiny
    captioner saved, and the library the plain ``index`` makes of them (as tests/test_ray_index.py)."""
    return make_photos(tmp_path_factory.mktemp("raycluster"))


@pytest.fixture
def two_nodes():
    """(address, head temp folder, second node's temp folder): ``ray start --head`` (1 CPU, 1 declared GPU: the
    captioning actor's slot) and a second ``ray start --address`` (1 CPU, a custom resource: the decode tasks'
    slot), each its own temp folder and process group; killed at the end whatever happens."""
    base = short_tmp("rc")
    port = free_port()
    common = ["--num-cpus", "1", "--object-store-memory", str(100 << 20), "--node-ip-address", "127.0.0.1",
              "--disable-usage-stats", "--block"]
    procs, logs = [], []

    def start(*args: str, name: str):
        log = open(base / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", *args, "--temp-dir", str(base / name), *common],
                                      env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("--head", "--port", str(port), "--num-gpus", "1", "--include-dashboard", "false", name="head")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and procs[0].poll() is None, (base / "head.log").read_text()
                time.sleep(0.2)
        start("--address", f"127.0.0.1:{port}", "--resources", '{"second_node": 1}', name="node2")
        wait = ("import ray, sys, time\nray.init(address=sys.argv[1], log_to_driver=False)\n"
                "t = time.monotonic() + 60\n"
                "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.monotonic() < t: time.sleep(0.2)\n"
                "print(sum(n['Alive'] for n in ray.nodes()))\n")
        out = subprocess.run([sys.executable, "-c", wait, f"127.0.0.1:{port}"], env=ENV, capture_output=True,
                             text=True, timeout=90)
        assert out.stdout.strip().endswith("2"), (out.stdout, out.stderr[-2000:], (base / "node2.log").read_text())
        yield f"127.0.0.1:{port}", base / "head", base / "node2"
    finally:
        left = kill_ray([p.pid for p in procs], str(base))
        for p in procs:
            p.wait(timeout=30)
        for log in logs:
            log.close()
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"Ray processes still running after the kill: {left}"


def test_two_node_cluster_indexes_through_address(photos, two_nodes, tmp_path):
    pics, ckpt, ref = photos
    address, head, node2 = two_nodes
    db = tmp_path / "lib" / "library.db"
    t0 = time.monotonic()
    r = cli("index", str(pics), "--engine", "ray", "--address", address, "--out", str(tmp_path / "run"),
            "--db", str(db), "--model", str(ckpt), "--device", "cpu", "--json")
    took = time.monotonic() - t0
    rep = json.loads(r.stdout)
    c = rep["cluster"]
    assert c["planned"] == c["submitted"] == 10 and c["ingested"] and c["not_ingested"] == 0, c
    assert rep["added"] == 9 and rep["failed"] == 1
    assert len(c["nodes"]) == 2 and c["gpus_per_actor"] == 1 and c["actors"] == 1, c
    assert_same(snapshot(db), snapshot(ref))
    # both nodes worked: the captioning actor on the head (the only GPU), the decode tasks on the second node
    # (the head's CPU is the actor's); Ray names them at the top of each worker's log, in each node's temp folder
    on_head, on_node2 = task_names(head), task_names(node2)
    assert any("Describer" in n for n in on_head), on_head
    assert any("decode_batch" in n for n in on_node2), on_node2
    assert not any("Describer" in n for n in on_node2), on_node2
    print(f"two-node index of 10 photos: {took:.1f} s; head ran {sorted(on_head)}, node 2 ran {sorted(on_node2)}")


def test_driver_killed_half_way_then_run_again(tmp_path):
    """A real SIGKILL of the driver (``imgsearch index --engine ray``, which started its own local Ray instance)
    once some shard rows exist; the same command again submits only the photos without a shard row, and the
    library equals the plain index's, without duplicates."""
    pics = tmp_path / "pics"
    for i in range(40):   # 40 distinct photos (the size differs), a few kinds
        make_photo(pics / f"d{i % 4}" / f"p{i:02d}_{KINDS[i % 8]}.jpg", kind=KINDS[i % 8], size=(400 + i, 300))
    n = 40
    ckpt = tiny_captioner(0).save(tmp_path / "tiny.pt")
    ref = tmp_path / "ref" / "library.db"
    with Library(ref, model=ckpt, device="cpu") as lib:
        lib.index([pics], workers=0, batch_size=4)
    run, db = tmp_path / "run", tmp_path / "lib" / "library.db"
    raytmp, raytmp2 = short_tmp("rk"), short_tmp("rk")   # each run's Ray instance lives there: killed by it below
    # captioning batches of 4: Ray Data writes the shard rows in a few files as they come (with the default 32 and
    # 40 photos it writes them all in one file at the end, and there is no half-way to kill at)
    cmd = ["index", str(pics), "--engine", "ray", "--out", str(run), "--db", str(db), "--model", str(ckpt),
           "--device", "cpu", "--batch-size", "4", "--json"]
    # the driver in its own process group: the local Ray instance it starts (ray.init) is in it too; niced, so that
    # this process, polling for the first shard rows, gets a CPU when they come
    driver = subprocess.Popen(["nice", "-n", "10", str(BIN / "imgsearch"), *cmd],
                              env={**ENV, "RAY_TMPDIR": str(raytmp)}, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        try:
            deadline = time.monotonic() + 90
            while not shard_rows(run):                 # the first shard file is whole: kill now
                assert driver.poll() is None, "the Ray run ended before any shard row was written"
                assert time.monotonic() < deadline, "no shard row after 90 s"
                time.sleep(0.005)
            os.killpg(driver.pid, signal.SIGKILL)     # the driver and, with it, its Ray instance: a crash
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
            left = kill_ray([driver.pid], str(raytmp))
        assert not left, f"the killed driver's Ray processes are still running: {left}"
        assert driver.returncode == -signal.SIGKILL
        done = {k["path"] for k in shards.read_keys(run)}
        assert 0 < len(done) < n, len(done)
        time.sleep(1.0)      # nothing of the killed run may still be writing shards (a surviving Ray worker did)
        assert {k["path"] for k in shards.read_keys(run)} == done
        assert not db.exists() or rows(db, "SELECT count(*) FROM photos")[0][0] == 0     # nothing ingested yet
        r = cli(*cmd, env={**ENV, "RAY_TMPDIR": str(raytmp2)})         # the same command again
    finally:
        left = kill_ray([], str(raytmp)) + kill_ray([], str(raytmp2))
        shutil.rmtree(raytmp, ignore_errors=True)
        shutil.rmtree(raytmp2, ignore_errors=True)
    assert not left, left
    c = json.loads(r.stdout)["cluster"]
    assert c["planned"] == n and c["submitted"] == n - len(done) and c["not_ingested"] == 0, (c, len(done))
    submitted = pq.read_table(run / "submit" / f"{c['attempt']}.parquet").column("path").to_pylist()
    assert sorted(submitted) == sorted(str(p) for p in pics.rglob("*.*") if str(p) not in done)
    assert_same(snapshot(db), snapshot(ref))
    assert rows(db, "SELECT count(*), count(DISTINCT path), count(DISTINCT content_hash) FROM photos")[0] == (n, n, n)
    assert rows(db, "SELECT count(*) FROM photo_fts")[0][0] == n
    print(f"killed with {len(done)} of {n} photos in shard rows; the rerun submitted {c['submitted']}")


def test_ray_messages_stay_off_stdout(tmp_path):
    """Ray's driver prints the raylet's warnings on stdout from a thread of its own, even with
    ``log_to_driver=False`` (a CI run's ``index --engine ray --json`` began with "(raylet) WARNING: 4 PYTHON worker
    processes have been started ..."): while imgsearch holds the Ray connection they go to stderr, and what the
    caller prints after the run is all that is on stdout. The message is printed here by the very function of
    Ray's driver that printed that one."""
    raytmp = short_tmp("rm")
    code = ("import json, ray\n"
            "from ray._private.worker import print_to_stdstream\n"
            "from imgsearch.cluster.run import connected\n"
            "with connected(None):\n"
            "    print_to_stdstream({'lines': ['WARNING: a raylet message'], 'pid': 'raylet', 'is_err': False},\n"
            "                       ignore_prefix=False)\n"
            "    print('inside the connection')\n"
            "print(json.dumps({'after': ray.is_initialized()}))\n")
    try:
        p = subprocess.run([sys.executable, "-c", code], env={**ENV, "RAY_TMPDIR": str(raytmp)}, cwd=ROOT,
                           capture_output=True, text=True, timeout=90)
    finally:
        left = kill_ray([], str(raytmp))
        shutil.rmtree(raytmp, ignore_errors=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout) == {"after": False}, p.stdout
    assert "WARNING: a raylet message" in p.stderr and "inside the connection" in p.stderr, p.stderr[-3000:]
    assert not left, left
