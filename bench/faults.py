#!/usr/bin/env python
"""Fault suite: kill, interrupt, starve and damage real index runs, then check what survived.

A folder of photos drawn with Pillow (tests/photos.py: distinct scenes, each of its own size, so no two
share content) plus one file of each kind of bad input (tests/photos.make_bad_files, and a FIFO, a folder
named like a photo, a dangling symlink, a symlink loop, a photo whose file name is not UTF-8) is indexed with the
shipped model by the real CLI (`imgsearch index`, a subprocess per run). Each scenario disturbs a run:

  * SIGKILL before the first batch, after 1 batch, after 3 batches, after the last one (before the FAISS
    update), at 2 seeded random times (25-85 % into a run as long as the undisturbed one), twice in a row, in the middle of
    writing a FAISS file (a hook in the child kills itself after 2 KiB of it), in the middle of a schema
    migration of an old library (a hook kills the child at its 8th SQL statement of the migration);
  * SIGINT and SIGTERM after 2 batches (both a clean stop with one line and no traceback: SIGINT exit 130,
    SIGTERM exit 143 — `imgsearch index` unwinds it like Ctrl-C);
  * disk full: the library on a small tmpfs (mount -t tmpfs; skipped with a message where mount is not
    allowed), nearly filled, so a batch cannot be written; then space is freed;

then runs `imgsearch index` again to completion and checks the library: PRAGMA integrity_check, no
duplicate path, no orphaned caption / tag / cells / FTS5 row, every good photo captioned with a caption
vector, every bad input recorded as failed with a reason, no run left open, a hybrid query answers, and
the FAISS indexes hold exactly the store's photos. "Photos lost" counts good photos missing from the
completed library; any loss or inconsistency makes the suite exit 1.

Then damaged caches: each FAISS file truncated, garbled and emptied, a garbage BM25 cache, a garbled
cached thumbnail, and the cached MiniLM and re-ranking ONNX files garbled (in a private IMGSEARCH_CACHE,
so the user's cache is never touched): a fresh `imgsearch query` must give the same results as before
the damage (the cache rebuilt, never trusted), a thumbnail request a valid JPEG.

Printed: one line per check and a table; saved to bench/results/faults.{txt,json}. Runtime: a few minutes
on 2 cores (each index run loads torch and the shipped model).

    python bench/faults.py                   # everything
    python bench/faults.py --only kill       # scenario names containing "kill"
    python bench/faults.py --keep            # keep the work folder (printed) to look at
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from index_throughput import RESULTS, machine  # noqa: E402

BATCH = 4
QUERY = "a red circle on a white wall"

# The child: the real CLI, with an optional hook that makes it kill itself at one precise point.
CHILD = textwrap.dedent('''
    import os, signal, sys
    hook = os.environ.get("FAULT_HOOK", "")

    def die(where):
        sys.stdout.write("KILLED " + where + "\\n"); sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if hook == "faiss_save":
        from imgsearch.search import faiss_lib
        faiss = faiss_lib.load()
        real_writer = faiss.PyCallbackIOWriter

        def writer(callback, *a):
            seen = [0]

            def counting(b):
                out = callback(b)
                seen[0] += len(b)
                if seen[0] > 2048:
                    die("in a FAISS save")
                return out
            return real_writer(counting, *a)
        faiss.PyCallbackIOWriter = writer
    elif hook.startswith("migration:"):
        at = int(hook.split(":")[1])
        import imgsearch.store.db as db
        from sqlalchemy import event
        real_migrate = db.migrate

        def migrate(engine, target="head"):
            seen = [0]

            @event.listens_for(engine, "before_cursor_execute")
            def count(*a, **kw):
                seen[0] += 1
                if seen[0] >= at:
                    die("in a migration")
            return real_migrate(engine, target)
        db.migrate = migrate
    from imgsearch.cli import app
    sys.argv = ["imgsearch", *sys.argv[1:]]
    app()
''')

CHECK_QUERY = textwrap.dedent('''
    import json, sys
    from imgsearch import Library
    with Library(sys.argv[1], create=False) as lib:
        hits = lib.query(sys.argv[2], k=10, mode="hybrid")
        ids = {r[0] for r in lib.store.engine.connect().exec_driver_sql(
            "SELECT id FROM photos WHERE error IS NULL AND caption_embedding IS NOT NULL").fetchall()}
        faiss = {k: sorted(int(i) for i in lib.caches.vector_index(k).ids()) for k in ("caption", "image", "labels")}
        print(json.dumps({"hits": [[h.id, round(h.score, 5)] for h in hits], "store_ids": sorted(ids),
                          "faiss": faiss}))
''')

THUMB = textwrap.dedent('''
    import io, sys
    from fastapi.testclient import TestClient
    from PIL import Image
    from imgsearch.serve.app import create_app
    with TestClient(create_app(sys.argv[1]), base_url="http://127.0.0.1:8765") as c:
        r = c.get("/thumb/" + sys.argv[2])
        ok = r.status_code == 200
        try:
            Image.open(io.BytesIO(r.content)).load()
        except Exception as e:
            ok = False
        print("valid JPEG" if ok else "HTTP %d, %d bytes, not a valid image" % (r.status_code, len(r.content)))
''')


# ============================================================== photos

def make_photos(folder: Path, n: int) -> tuple[set[str], set[str]]:
    """(good photo paths, bad input paths) under ``folder``."""
    from photos import KINDS, make_bad_files, make_photo

    good = set()
    for i in range(n):
        sub = folder / ("trip" if i % 3 else "home") / (f"day{i % 2}" if i % 5 == 0 else "")
        p = make_photo(sub / f"p{i:03d}_{KINDS[i % len(KINDS)]}.jpg", kind=KINDS[i % len(KINDS)],
                       size=(600 + 7 * i, 450 + 3 * i))
        good.add(os.path.normpath(str(p)))
    bad_dir = folder / "bad"
    bad = {str(bad_dir / name) for name in make_bad_files(bad_dir)}
    os.mkfifo(bad_dir / "fifo.jpg")                       # never opened for reading (it would block)
    (bad_dir / "folder.jpg").mkdir()                      # a folder named like a photo
    os.symlink(bad_dir / "no_such_target.jpg", bad_dir / "dangling.jpg")
    os.symlink(bad_dir / "loop_b.jpg", bad_dir / "loop_a.jpg")
    os.symlink(bad_dir / "loop_a.jpg", bad_dir / "loop_b.jpg")
    nonutf8 = os.fsencode(str(bad_dir)) + b"/caf\xe9-not-utf8.jpg"
    with open(nonutf8, "wb") as f:                        # a photo under a name that is not UTF-8: reported by
        from photos import draw_scene                     # the scan, not indexed (README)

        draw_scene("sky", (500, 400)).save(f, "JPEG")
    bad |= {str(bad_dir / n) for n in ("fifo.jpg", "folder.jpg", "dangling.jpg", "loop_a.jpg", "loop_b.jpg")}
    bad.add(os.fsdecode(nonutf8))
    return good, bad


# ============================================================== running the CLI

class Runs:
    def __init__(self, work: Path, env: dict):
        self.work, self.env = work, env
        self.child = work / "child.py"
        self.child.write_text(CHILD)

    def start(self, db: Path, folder: Path, hook: str = "", extra=()) -> subprocess.Popen:
        env = dict(self.env, FAULT_HOOK=hook)
        cmd = [sys.executable, str(self.child), "index", str(folder), "--db", str(db), "--batch-size", str(BATCH),
               "--quiet", *extra]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace")

    def run(self, db: Path, folder: Path, hook: str = "", timeout: float = 300) -> dict:
        t = time.monotonic()
        p = self.start(db, folder, hook)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return {"rc": p.returncode, "stdout": out, "stderr": err, "s": round(time.monotonic() - t, 1)}

    def complete(self, db: Path, folder: Path, tries: int = 8) -> dict:
        """Index to completion; retried while the library lock of a killed run is still held."""
        waited = 0.0
        for _ in range(tries):
            r = self.run(db, folder)
            if r["rc"] != 0 and "running" in r["stderr"] and "index" in r["stderr"]:
                time.sleep(1.0)
                waited += r["s"] + 1.0
                continue
            r["lock_wait_s"] = round(waited, 1)
            return r
        r["lock_wait_s"] = round(waited, 1)
        return r


def good_count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return c.execute("SELECT count(*) FROM photos WHERE error IS NULL").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_started(db: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return c.execute("SELECT count(*) FROM index_runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def signal_when(p: subprocess.Popen, db: Path, ready, sig: int, timeout: float = 240) -> tuple[bool, str, str]:
    """Send ``sig`` to ``p`` once ``ready(db)``; (sent, stdout, stderr) once it ended."""
    deadline = time.monotonic() + timeout
    sent = False
    while p.poll() is None and time.monotonic() < deadline:
        if ready(db):
            p.send_signal(sig)
            sent = True
            break
        time.sleep(0.02)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return sent, out, err


# ============================================================== checks

def check_library(db: Path, good: set[str], bad: set[str], env: dict) -> dict:
    """What the completed library holds, and every inconsistency found."""
    problems: list[str] = []
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    c.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    q = lambda sql: c.execute(sql).fetchall()  # noqa: E731
    integrity = q("PRAGMA integrity_check")[0][0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    dups = q("SELECT path, count(*) FROM photos GROUP BY path HAVING count(*) > 1")
    if dups:
        problems.append(f"{len(dups)} duplicate paths")
    for table in ("captions", "tags", "photo_cells"):
        n = q(f"SELECT count(*) FROM {table} WHERE photo_id NOT IN (SELECT id FROM photos)")[0][0]
        if n:
            problems.append(f"{n} orphaned {table} rows")
    n = q("SELECT count(*) FROM photo_fts WHERE rowid NOT IN (SELECT id FROM photos)")[0][0]
    if n:
        problems.append(f"{n} orphaned FTS5 rows")
    rows = {p: (err, cap, emb, ncap) for p, err, cap, emb, ncap in q(
        "SELECT path, error, caption, length(caption_embedding), "
        "(SELECT count(*) FROM captions WHERE photo_id = photos.id) FROM photos")}
    present = {p for p, (err, cap, emb, ncap) in rows.items() if err is None}
    lost = sorted(good - present)
    for p in sorted(good & present):
        err, cap, emb, ncap = rows[p]
        if not cap or emb != 384 * 4 or ncap < 1:
            problems.append(f"{os.path.basename(p)} not fully described")
    failed = {p for p, (err, *_r) in rows.items() if err}
    extra = sorted(present - good)
    if extra:
        problems.append(f"{len(extra)} photos that are not good photos: {[os.path.basename(p) for p in extra][:3]}")
    bad_recorded = sorted(p for p in bad if p in failed)
    bad_absent = sorted(p for p in bad if p not in rows)    # skipped by the scanner (FIFO, folder, links)
    open_runs = q("SELECT count(*) FROM index_runs WHERE finished_at IS NULL")[0][0]   # killed runs: history
    last = q("SELECT finished_at FROM index_runs ORDER BY id DESC LIMIT 1")
    if not last or last[0][0] is None:
        problems.append("the completing run is not recorded as finished")
    c.close()
    tmp = sorted(str(p.name) for p in db.parent.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.suffixes)
    r = subprocess.run([sys.executable, "-c", CHECK_QUERY, str(db), QUERY], env=env, capture_output=True, text=True,
                       timeout=240)
    query = None
    if r.returncode != 0:
        problems.append(f"query failed: {r.stderr.strip().splitlines()[-1:]}")
    else:
        query = json.loads(r.stdout.strip().splitlines()[-1])
        if not query["hits"]:
            problems.append("the query found nothing")
        for kind, ids in query["faiss"].items():
            if kind == "caption" and ids != query["store_ids"]:
                problems.append(f"FAISS {kind} index holds {len(ids)} photos, the store {len(query['store_ids'])}")
    return {"integrity": integrity, "good": len(present & good), "lost": len(lost), "lost_names": lost[:5],
            "bad_failed": len(bad_recorded), "bad_skipped": len(bad_absent), "problems": problems,
            "interrupted_runs_recorded": open_runs,
            "tmp_files_left": tmp, "hits": query["hits"] if query else None}


def _after(delay: float):
    """A ``ready`` for signal_when: true ``delay`` seconds after its first call (the run's start)."""
    t0 = []

    def ready(_db) -> bool:
        if not t0:
            t0.append(time.monotonic())
        return time.monotonic() - t0[0] >= delay
    return ready


def tb(err: str) -> int:
    """Lines of traceback in a run's stderr (0: none)."""
    lines = err.splitlines()
    return next((len(lines) - i for i, line in enumerate(lines) if line.startswith("Traceback")), 0)


# ============================================================== the scenarios

class Suite:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="imgsearch_faults_", dir=args.workdir))
        cache = self.work / "cache"
        real = Path(os.environ.get("IMGSEARCH_CACHE") or Path.home() / ".cache" / "imgsearch")
        if real.is_dir():
            shutil.copytree(real, cache, ignore=shutil.ignore_patterns("*.tmp"))
        self.env = dict(os.environ, IMGSEARCH_CACHE=str(cache), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.env.pop("IMGSEARCH_DB", None)
        self.cache = cache
        self.photos = self.work / "photos"
        self.good, self.bad = make_photos(self.photos, args.photos)
        self.runs = Runs(self.work, self.env)
        self.rows: list[dict] = []
        self.lines: list[str] = []
        self.clean_s: float | None = None      # seconds of an undisturbed run (the clean scenario)

    def say(self, s: str) -> None:
        print(s, flush=True)
        self.lines.append(s)

    def lib(self, name: str) -> Path:
        d = self.work / name
        d.mkdir()
        return d / "library.db"

    def record(self, kind: str, name: str, tried: str, outcome: str, ok: bool, lost: int = 0, **extra) -> None:
        row = {"kind": kind, "name": name, "tried": tried, "outcome": outcome, "ok": ok, "lost": lost, **extra}
        self.rows.append(row)
        self.say(f"[{'ok' if ok else 'FAIL'}] {name}: {tried} -> {outcome}")

    def finish(self, kind: str, name: str, tried: str, db: Path, before: str, notes: list[str],
               reached: bool = True, clean_stop: bool = True) -> dict:
        """Complete the library with a normal run, check it, record the scenario."""
        done = self.runs.complete(db, self.photos)
        if done["rc"] != 0:
            notes.append(f"completing run exit {done['rc']}: {done['stderr'].strip().splitlines()[-1:]}")
        if done.get("lock_wait_s"):
            notes.append(f"the next run waited {done['lock_wait_s']} s for the lock of the killed run")
        chk = check_library(db, self.good, self.bad, self.env)
        if chk["tmp_files_left"]:
            notes.append(f"left behind: {', '.join(chk['tmp_files_left'])}")
        ok = reached and clean_stop and done["rc"] == 0 and not chk["problems"] and chk["lost"] == 0
        outcome = (f"{before}; next run completed: {chk['good']}/{len(self.good)} photos, "
                   f"{chk['bad_failed']} bad recorded, integrity {chk['integrity']}"
                   + (f"; PROBLEMS: {'; '.join(chk['problems'])}" if chk["problems"] else "")
                   + (f"; notes: {'; '.join(notes)}" if notes else ""))
        if not reached:
            outcome = "kill point NOT reached; " + outcome
        self.record(kind, name, tried, outcome, ok, chk["lost"], check=chk)
        return chk

    # ---------------------------------------------------------------- kills and signals
    def killed(self, name: str, tried: str, ready, sig=signal.SIGKILL, expect_rc=None):
        db = self.lib(name)
        p = self.runs.start(db, self.photos)
        sent, out, err = signal_when(p, db, ready, sig)
        at = good_count(db)
        notes = []
        before = f"signal at {at} photos committed, exit {p.returncode}"
        if expect_rc is not None and p.returncode not in expect_rc:
            notes.append(f"exit {p.returncode}, expected {' or '.join(map(str, expect_rc))}")
        if tb(err):
            notes.append(f"printed a {tb(err)}-line traceback")
        clean = expect_rc is None or (p.returncode in expect_rc and not tb(err))
        self.finish("signal" if sig != signal.SIGKILL else "kill", name, tried, db, before, notes, reached=sent,
                    clean_stop=clean)

    def kill_twice(self):
        db = self.lib("kill twice")
        p = self.runs.start(db, self.photos)
        sent1, *_ = signal_when(p, db, lambda d: good_count(d) >= BATCH, signal.SIGKILL)
        first = good_count(db)
        time.sleep(0.5)
        p = self.runs.start(db, self.photos)
        sent2, *_ = signal_when(p, db, lambda d: good_count(d) >= first + BATCH, signal.SIGKILL)
        second = good_count(db)
        self.finish("kill", "kill twice", "SIGKILL after 1 batch, then the resumed run after 1 more", db,
                    f"killed at {first} then {second} photos", [], reached=sent1 and sent2)

    def hooked(self, name: str, tried: str, hook: str, prepare=None):
        db = self.lib(name)
        if prepare is not None:
            prepare(db)
        r = self.runs.run(db, self.photos, hook=hook)
        reached = "KILLED" in r["stdout"]
        self.finish("kill", name, tried, db, f"killed at {good_count(db)} photos committed (exit {r['rc']})", [],
                    reached=reached)

    def old_library(self, db: Path) -> None:
        """A library at the first schema revision holding one photo of the folder (made by an old version)."""
        from imgsearch.store.db import make_engine, migrate

        engine = make_engine(db)
        migrate(engine, "0001")
        engine.dispose()
        photo = sorted(self.good)[0]
        with sqlite3.connect(db) as c:
            c.execute("INSERT INTO photos (path, folder, size, mtime_ns, content_hash, caption, model_version, "
                      "indexed_at, caption_embedding) VALUES (?, ?, 1, 1, 'old', 'an old caption', 'v0', "
                      "'2024-01-01 00:00:00', ?)", (photo, os.path.dirname(photo), b"\x00" * 384 * 4))
            pid = c.execute("SELECT id FROM photos").fetchone()[0]
            c.execute("INSERT INTO captions VALUES (?, 0, 'an old caption', -1.5)", (pid,))

    def disk_full(self):
        mnt = self.work / "tmpfs"
        mnt.mkdir()
        size_kib = 6 * 1024
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.record("disk", "disk full", "library on a small tmpfs", f"skipped: cannot mount a tmpfs here "
                        f"({r.stderr.strip() or r.returncode})", True)
            return
        try:
            db = mnt / "lib" / "library.db"
            db.parent.mkdir()
            from imgsearch.store.db import open_store

            open_store(db).close()                      # the schema; then the disk is filled to ~200 KB free
            filler = mnt / "filler"
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, free - 200 * 1024))
            r = self.runs.run(db, self.photos)
            notes = []
            full = r["rc"] != 0
            msg = (r["stderr"].strip().splitlines() or [""])[-1]
            if tb(r["stderr"]):
                notes.append(f"printed a {tb(r['stderr'])}-line traceback")
            before = (f"run on a full disk: exit {r['rc']}, {good_count(db)} photos committed, said {msg[:120]!r}"
                      if full else "the run did not fill the disk")
            integrity = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
            before += f", integrity after it {integrity}"
            filler.unlink()
            self.finish("disk", "disk full", f"library on a {size_kib // 1024} MiB tmpfs filled to 200 KB free, "
                        "then space freed", db, before, notes, reached=full)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    # ---------------------------------------------------------------- damaged caches
    def damaged_caches(self, db: Path, baseline: list) -> None:
        from imgsearch import paths as P

        def query() -> tuple[list | None, str]:
            r = subprocess.run([sys.executable, "-c", CHECK_QUERY, str(db), QUERY], env=self.env,
                               capture_output=True, text=True, timeout=240)
            if r.returncode != 0:
                lines = r.stderr.strip().splitlines()
                return None, f"query failed (exit {r.returncode}, {tb(r.stderr)}-line traceback): {lines[-1:]}"
            return json.loads(r.stdout.strip().splitlines()[-1])["hits"], ""

        def damage(path: Path, how: str) -> None:
            data = path.read_bytes()
            if how == "truncated":
                path.write_bytes(data[: len(data) // 2])
            elif how == "emptied":
                path.write_bytes(b"")
            elif how == "garbled":
                mid = len(data) // 2
                path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 256]) + data[mid + 256:])
            else:  # garbage where there was none
                path.write_bytes(os.urandom(4096))

        targets = [(P.captions_faiss_path(db), h) for h in ("truncated", "garbled", "emptied")]
        targets += [(P.images_faiss_path(db), "garbled"), (P.labels_faiss_path(db), "truncated")]
        targets += [(P.bm25_cache_path(db), "garbage")]
        models = self.cache / "models"
        for pattern in ("all-minilm-l6-v2-*.onnx", "scorer-captioner-*.onnx"):
            for f in sorted(self.cache.glob(pattern)) + sorted(models.glob(pattern) if models.is_dir() else []):
                targets.append((f, "garbled"))
        for path, how in targets:
            existed = path.exists()
            saved = path.read_bytes() if existed else None
            if not existed and how != "garbage":
                continue
            if not existed:
                path.write_bytes(b"")
            damage(path, how)
            hits, err = query()
            same = hits == baseline
            name = path.name if "faiss" in path.name or path.name.endswith(".bm25") else f"cache/{path.name}"
            moved = sum(x[0] != y[0] for x, y in zip(hits or [], baseline)) + abs(len(hits or []) - len(baseline))
            rescored = sum(x != y for x, y in zip(hits or [], baseline))
            outcome = err or ("same results as before the damage" if same else
                              f"DIFFERENT results: {moved} of {len(baseline)} ranks changed, {rescored} scores "
                              "(the damaged file was used)")
            self.record("cache", f"{how} {name}", f"{how} {name}, then a fresh hybrid query", outcome, same)
            if saved is not None:
                path.write_bytes(saved)             # each check starts from good files
            else:
                path.unlink(missing_ok=True)
        # a garbled cached thumbnail
        pid = sqlite3.connect(db).execute("SELECT id FROM photos WHERE error IS NULL ORDER BY id").fetchone()[0]
        r = subprocess.run([sys.executable, "-c", THUMB, str(db), str(pid)], env=self.env, capture_output=True,
                           text=True, timeout=240)
        thumbs_dir = P.thumbs_dir(db)
        cached = sorted(thumbs_dir.rglob("*.jpg")) if thumbs_dir.is_dir() else []
        if r.returncode != 0 or not cached:
            self.record("cache", "garbled thumbnail", "a thumbnail cached, then garbled",
                        f"could not make a thumbnail first: {r.stderr.strip().splitlines()[-1:]}", False)
            return
        for f in cached:
            damage(f, "truncated")
        r = subprocess.run([sys.executable, "-c", THUMB, str(db), str(pid)], env=self.env, capture_output=True,
                           text=True, timeout=240)
        outcome = r.stdout.strip() or r.stderr.strip().splitlines()[-1:]
        self.record("cache", "truncated thumbnail", "the cached thumbnail truncated, then requested",
                    f"served {outcome}", outcome == "valid JPEG")

    # ---------------------------------------------------------------- all
    def run(self) -> int:
        a = self.args
        self.say(f"work folder {self.work}; {len(self.good)} good photos, {len(self.bad)} bad inputs; batch {BATCH}; "
                 f"shipped model; private IMGSEARCH_CACHE")
        t0 = time.monotonic()
        want = lambda name: a.only is None or a.only in name  # noqa: E731

        if want("clean") or want("cache") or want("bad inputs"):
            db = self.lib("clean")
            r = self.runs.run(db, self.photos)
            self.clean_s = r["s"]
            chk = check_library(db, self.good, self.bad, self.env)
            ok = r["rc"] == 0 and not chk["problems"] and chk["lost"] == 0
            self.record("bad", "bad inputs", f"index {len(self.good)} photos + {len(self.bad)} bad inputs "
                        f"({r['s']} s)", f"{chk['good']}/{len(self.good)} photos, {chk['bad_failed']} bad inputs "
                        f"recorded as failed with a reason, {chk['bad_skipped']} skipped or reported by the scan, "
                        f"exit {r['rc']}" + (f"; PROBLEMS: {chk['problems']}" if chk["problems"] else ""),
                        ok and chk["bad_failed"] + chk["bad_skipped"] == len(self.bad), chk["lost"], check=chk)
            if want("cache"):
                self.damaged_caches(db, chk["hits"])
        if want("kill"):
            self.killed("kill before a batch", "SIGKILL after the run started, before any batch",
                        lambda d: run_started(d) and good_count(d) == 0)
            self.killed("kill after 1 batch", "SIGKILL after the first batch", lambda d: good_count(d) >= BATCH)
            self.killed("kill after 3 batches", "SIGKILL after 3 batches", lambda d: good_count(d) >= 3 * BATCH)
            self.killed("kill after the last batch", "SIGKILL once every photo is committed (before the FAISS "
                        "update)", lambda d: good_count(d) >= len(self.good))
            rng = random.Random(a.seed)
            span = self.clean_s or 5.0     # how long a whole run took here: the kill falls inside one
            for i in range(a.random_kills):
                delay = round(rng.uniform(0.25, 0.85) * span, 1)
                self.killed(f"kill at random {i + 1}", f"SIGKILL {delay} s after the run started",
                            _after(delay))
            self.kill_twice()
            self.hooked("kill in faiss save", "SIGKILL 2 KiB into writing a FAISS file", "faiss_save")
            self.hooked("kill in migration", "SIGKILL at the 8th SQL statement migrating a schema-0001 library",
                        "migration:8", prepare=self.old_library)
        if want("signal"):
            self.killed("sigint after 2 batches", "SIGINT (Ctrl-C) after 2 batches",
                        lambda d: good_count(d) >= 2 * BATCH, signal.SIGINT, expect_rc=(130,))
            # unwound like Ctrl-C (cli.sigterm_as_interrupt): exit 143, one line
            self.killed("sigterm after 2 batches", "SIGTERM after 2 batches", lambda d: good_count(d) >= 2 * BATCH,
                        signal.SIGTERM, expect_rc=(143,))
        if want("disk"):
            self.disk_full()

        took = time.monotonic() - t0
        kills = [r for r in self.rows if r["kind"] in ("kill", "signal")]
        caches = [r for r in self.rows if r["kind"] == "cache"]
        lost = sum(r["lost"] for r in self.rows)
        bad_row = next((r for r in self.rows if r["kind"] == "bad"), None)
        self.say("")
        self.say(f"{'scenario':34s} {'ok':4s} {'lost':>4s}  outcome")
        for r in self.rows:
            self.say(f"{r['name'][:34]:34s} {'ok' if r['ok'] else 'FAIL':4s} {r['lost']:4d}  {r['outcome'][:150]}")
        summary = {
            "kill_points_survived": f"{sum(r['ok'] for r in kills)}/{len(kills)}",
            "bad_inputs_handled": (f"{bad_row['check']['bad_failed'] + bad_row['check']['bad_skipped']}/{len(self.bad)}"
                                   if bad_row else None),
            "damaged_caches_handled": f"{sum(r['ok'] for r in caches)}/{len(caches)}",
            "photos_lost": lost, "failed_checks": sum(not r["ok"] for r in self.rows), "seconds": round(took),
        }
        self.say(f"\nkill points survived {summary['kill_points_survived']}; bad inputs handled "
                 f"{summary['bad_inputs_handled']}; damaged caches handled {summary['damaged_caches_handled']}; "
                 f"photos lost {lost}; {summary['failed_checks']} failed check(s); {took:.0f} s")
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        m = machine(with_torch=False)
        Path(f"{out}.json").write_text(json.dumps({"machine": m, "summary": summary, "rows": self.rows}, indent=1,
                                                  default=str) + "\n")
        Path(f"{out}.txt").write_text("\n".join(self.lines) + "\n")
        self.say(f"wrote {out}.json and {out}.txt")
        if not a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if lost or summary["failed_checks"] else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=24, help="good photos drawn (plus the bad inputs)")
    ap.add_argument("--only", help="run only the scenarios whose name contains this (clean, cache, kill, signal, "
                                   "disk)")
    ap.add_argument("--random-kills", type=int, default=2, help="SIGKILLs at seeded random times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the work folder is made (default: the temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", default=str(RESULTS / "faults"), help="writes OUT.json and OUT.txt")
    args = ap.parse_args(argv)
    return Suite(args).run()


if __name__ == "__main__":
    sys.exit(main())
