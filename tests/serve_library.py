"""The library the `imgsearch serve` tests search (test_serve_api.py, test_serve_browser.py), and a real
uvicorn server in a thread.  The fixtures over them (``served_library``, ``live_server``) are in conftest.py.

The library is indexed for real (tiny untrained captioner), then each photo's captions, keywords, tags and
embeddings are rewritten through the store with known text, so that searches (which go through the real
query path) have a deterministic best hit.
"""
from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

from libtools import tiny_captioner
from photos import make_photo

INDEX_KW = dict(batch_size=8, workers=0, progress=False)
XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
XSS_CAPTION = "<b>purple</b> kite <img src=y onerror=alert(2)> & 'quotes\""
SECRET = "TOP SECRET: not a photo of the library\n"
TAKEN = datetime(2021, 6, 5, 14, 30, 0)
# file name (under pics/) → (drawn kind, caption written into the store)
PHOTOS = {
    "red_circle.jpg": ("red_circle", "a red circle on a white wall"),
    "blue_square.jpg": ("blue_square", "a blue square on a yellow table"),
    "green_triangle.png": ("green_triangle", "a green triangle tent in the snow"),
    "sky.jpg": ("sky", "a blue sky above a green field"),
    XSS_NAME: ("stripes", XSS_CAPTION),
    "sub/checker.jpg": ("checker", "a black and white checkerboard floor"),
}


def relabel(lib, captions: dict[str, str]) -> None:
    """Give photos known captions/keywords/tags/embeddings, through the store (one write batch)."""
    from sqlalchemy import delete, select, update

    from imgsearch.store.db import bump_revision
    from imgsearch.store.models import Caption, Photo, pack_vector
    from imgsearch.store.writes import rebuild_search_text, set_terms  # the BM25 documents
    from imgsearch.text.normalize import keywords

    vecs = lib.embedder().embed(list(captions.values()))
    with lib.store.write() as s:
        for (path, cap), v in zip(captions.items(), vecs):
            pid = s.execute(select(Photo.id).where(Photo.path == path)).scalar_one()
            s.execute(delete(Caption).where(Caption.photo_id == pid))
            s.execute(update(Photo).where(Photo.id == pid).values(
                caption=cap, caption_embedding=pack_vector(v), image_embedding=pack_vector(v),
                label_embedding=pack_vector(v)))
            s.add_all([Caption(photo_id=pid, rank=0, text=cap, score=-0.25),
                       Caption(photo_id=pid, rank=1, text=f"{cap} again", score=-0.75)])
            set_terms(s, pid, [("tag", "picture", 0.5), ("tag", "drawing", 0.25)]
                      + [("keyword", w, 1.0) for w in keywords([cap])])
        s.flush()
        rebuild_search_text(s)
        bump_revision(s)


def build_library(base: Path) -> tuple[Path, Path, dict[str, int]]:
    """(db, photo folder, {name under pics/: id}) — 6 photos (one per PHOTOS entry) and one broken file."""
    from imgsearch import Library

    pics = base / "pics"
    for name, (kind, _) in PHOTOS.items():
        extra = dict(exif_orientation=6, taken_at=TAKEN) if name == "sky.jpg" else {}
        make_photo(pics / name, kind=kind, size=(320, 240), **extra)
    (pics / "broken.jpg").write_bytes(b"this is not a photo\n" * 8)
    db = base / "lib" / "library.db"
    with Library(db, captioner=tiny_captioner(0)) as lib:
        lib.index([pics], **INDEX_KW)
        relabel(lib, {str(pics / name): cap for name, (_, cap) in PHOTOS.items()})
        lib.refresh_caches()
    with sqlite3.connect(db) as c:
        ids = {os.path.relpath(p, pics): i for i, p in c.execute("SELECT id, path FROM photos")}
    return db, pics, ids


def make_served_library(base: Path) -> tuple[Path, Path, Path, dict[str, int]]:
    """(base, db, pics, ids): :func:`build_library` under ``base``, with a folder ``outside`` next to it
    holding files that must never be served."""
    db, pics, ids = build_library(base)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    make_photo(outside / "other.jpg", kind="noise", size=(64, 48))
    return base, db, pics, ids


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
