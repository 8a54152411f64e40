"""The web app: a search page plus the JSON API it uses (FastAPI).

    from imgsearch.serve.app import create_app
    app = create_app(Library("~/photos.db"))        # or create_app("~/photos.db")

Endpoints (all GET, all read-only):

    /                      the search page (static/index.html)
    /static/...            its script, style sheet and icon (no CDN: everything is local)
    /api/info              {"modes": [{"id", "label"}], "default_mode", "k_default", "k_max", "max_query_chars", ...}
    /api/search?q=&k=&mode=&folder=&min_score=
                           → {"query", "mode", "folder", "k", "took_ms", "count", "results": [...]}
                           (min_score: photos less relevant are cut; default the calibrated bar, 0 = none;
                           no photo at all is "count": 0, "results": [])
    /api/search?like=ID&k=&folder=      "more like this": photos similar to photo ID (mode "like")
    /api/search?...&after=&before=&sort=  dates (2024, 2024-06, 2024-06-15; both bounds include the period
                           named) and relevance | newest | oldest; without q (and like), the photos by date
                           (mode "date"); q and like together: the words and the photo fused
    /api/photo/{id}        everything stored about one photo (all captions with scores, tags, EXIF date...)
    /api/status            library size, last index run, failed files with reasons
    /api/search?...&near=&within=  only photos whose EXIF GPS is within ``within`` km (default 25) of ``near``
                           (a place name or LAT,LON; the answer's "near": {"place", "lat", "lon", "within_km"})
    /api/places            {"places": [{"place": "Paris, Île-de-France, France", "photos": n}]}, most photos first
    /api/folders           folders of the library (for the folder filter)
    /api/home?k=&n=        the start page: {"summary": {"photos", "folders", "last_index", "db_path"},
                           "recent": [hits, newest first, "score": null], "suggestions": ["word", ...]}
    /photo/{id}            the full photo (as is when a browser can show it, else converted to JPEG)
    /thumb/{id}            a thumbnail, short side 240 px (long side at most 1920), cached in <library dir>/thumbs/

Errors are JSON ``{"detail": "one clear sentence"}``, with the status of the error's kind
(:mod:`imgsearch.errors`, mapped in one handler here): 400 for a bad query/mode/folder/k
(:class:`BadRequest`, a UserError), 404 for anything that is not a photo of the library (photos are
addressed by integer id only; the body never says why), 503 when a model or the library file cannot
be used.
Searches run side by side (at most :data:`QUERY_SLOTS` inside the query engine at once, so that the model
threads of concurrent queries do not oversubscribe the cores); thumbnails and full photos are made on a
pool of their own (:data:`FILE_WORKERS` threads), so a query never waits for a thumbnail, however big the photo.
Every response carries a Content-Security-Policy (``default-src 'self'``) and ``nosniff``; requests
whose Host header is not a loopback name are refused (DNS-rebinding guard) unless the server was
started for other hosts.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import unicodedata
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders

from imgsearch.errors import ImgsearchError, NotFoundError, UserError
from imgsearch.hits import Hit
from imgsearch.limits import MAX_QUERY_CHARS   # the one query length limit of the API, the CLI and the web
from imgsearch.serve import details, thumbs

log = logging.getLogger("imgsearch.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_FOLDER_CHARS = 4096
DEFAULT_K = 24
MAX_K = 200
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_CORES = os.cpu_count() or 1
QUERY_SLOTS = max(2, min(8, 2 * _CORES))   # searches inside the engine at once (more wait for a slot)
FILE_WORKERS = max(2, min(4, _CORES))      # threads making thumbnails / converting photos (not the queries')
# the page's names for the modes: "dense" is the query against the caption embeddings, "image" against the photo ones
MODE_LABELS = {"hybrid": "hybrid", "bm25": "keywords (BM25)", "dense": "dense (caption embeddings)",
               "image": "image (photo embeddings)", "labels": "labels (ImageNet classes)",
               "text": "text in photos (OCR)"}
CSP = ("default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}
THUMB_CACHE = "private, max-age=3600"
PHOTO_CACHE = "private, no-cache"          # revalidate every time (cheap: ETag → 304)
API_CACHE = "no-store"


class BadRequest(UserError):
    """A query, mode, folder or k the API cannot take: HTTP 400 with the message."""


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers={"cache-control": API_CACHE})


# ---------------------------------------------------------------------------- input checks

def _bad_char(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs")  # control characters, lone surrogates


def clean_query(q: str | None) -> str:
    """The query as searched: control characters and lone surrogates become spaces, runs of white
    space collapse. :class:`BadRequest` when nothing is left or it is too long."""
    if q is None:
        raise BadRequest("missing query: add ?q=some+words (or ?like=PHOTO_ID)")
    if len(q) > 4 * MAX_QUERY_CHARS:
        raise BadRequest(f"query too long: {len(q)} characters (at most {MAX_QUERY_CHARS})")
    text = " ".join("".join(" " if _bad_char(ch) else ch for ch in q).split())
    if not text:
        raise BadRequest("empty query: type a few words")
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"query too long: {len(text)} characters (at most {MAX_QUERY_CHARS})")
    return text


def clean_date(value: str | None) -> str | None:
    """A date bound as given (checked by the library: a bad one is a 400 with its message); None for none."""
    if value is None or not value.strip():
        return None
    if len(value) > 40 or any(_bad_char(ch) for ch in value):
        raise BadRequest(f"invalid date {value[:40]!r}: use YYYY, YYYY-MM or YYYY-MM-DD")
    return value.strip()


def clean_near(lib, near: str | None, within: float | None):
    """The places.Near of ``near`` (a place name or "LAT,LON") and ``within`` (km); None for none. An unknown
    place or a bad radius is a 400 with the library's message."""
    if near is None or not near.strip():
        if within is not None:
            raise BadRequest("within needs near (a place or LAT,LON)")
        return None
    if len(near) > 200 or any(_bad_char(ch) for ch in near):
        raise BadRequest(f"invalid place {near[:40]!r}")
    return lib.near(near.strip(), within)


def clean_folder(lib, folder: str | None) -> str | None:
    """An absolute folder holding library photos, as the library resolves it; None for "all"."""
    if folder is None or not folder.strip():
        return None
    if len(folder) > MAX_FOLDER_CHARS:
        raise BadRequest("folder path too long")
    if any(_bad_char(ch) for ch in folder):
        raise BadRequest("the folder contains control characters")
    folder = folder.strip()
    expanded = os.path.expanduser(folder)
    if not os.path.isabs(expanded):
        raise BadRequest(f"folder must be an absolute path, not {folder!r}")
    from imgsearch.paths import resolve_root

    try:
        root = resolve_root(expanded)
    except (OSError, ValueError):
        root = None
    if root is None or details.count_under(lib, root) == 0:
        raise BadRequest(f"no photos in the library under {folder}")  # same answer whether it exists or not
    return root


def supported_modes(lib) -> tuple[str, ...]:
    modes = getattr(lib, "modes", None)
    if not modes:
        from imgsearch.search.settings import MODES

        modes = MODES
    return tuple(modes)


def _finite(x: Any) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def hit_json(h: Hit) -> dict:
    """A hit as the API returns it: :meth:`Hit.to_dict` with a finite score (JSON has no NaN), plus what
    only the page needs: the file name and the thumbnail and photo URLs."""
    d = h.to_dict()
    return {**d, "score": _finite(d["score"]), "name": os.path.basename(d["path"]),
            "thumb_url": f"/thumb/{d['id']}", "photo_url": f"/photo/{d['id']}"}


def _etag_matches(request: Request, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    if not inm:
        return False
    tags = [t.strip() for t in inm.split(",")]
    bare = etag.removeprefix("W/")
    return "*" in tags or any(t.removeprefix("W/") == bare for t in tags)


def _host_of(scope) -> str | None:
    for k, v in scope.get("headers") or ():
        if k == b"host":
            h = v.decode("latin-1").strip().lower()
            if h.startswith("["):
                return h[1:h.find("]")] if "]" in h else h
            return h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    return None


class _Guard:
    """ASGI middleware: refuse foreign Host headers; add the security headers to every response."""

    def __init__(self, app, allowed_hosts: Iterable[str] | None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    if k not in headers:
                        headers[k] = v
            await send(message)

        if self.allowed is not None:
            host = _host_of(scope)
            if host is not None and host not in self.allowed:
                resp = _error(400, "bad Host header: this server only answers requests addressed to "
                                   + ", ".join(sorted(self.allowed)))
                return await resp(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------- the app

def warm(lib) -> None:
    """Load the text embedder, FAISS and BM25 caches now, so the first query is as fast as the rest."""
    with contextlib.suppress(ImgsearchError):
        lib.refresh_caches()
    for mode in supported_modes(lib):
        try:
            lib.query("photo", k=1, mode=mode)
        except ImgsearchError:  # e.g. no text embedder: each query will answer with the reason
            pass
        except Exception:  # broad: a broken cache must not stop the server starting; the query will say more
            log.exception("warming up mode %s failed", mode)


def create_app(library, *, allowed_hosts: Iterable[str] | None = LOCAL_HOSTS, warm_up: bool = False,
               page_size: int = DEFAULT_K, query_slots: int | None = None) -> FastAPI:
    """The FastAPI app over ``library`` (a :class:`imgsearch.Library`, or a path to open one).

    ``allowed_hosts``: Host header names accepted (default: loopback names); None accepts any.
    ``page_size``: the photos the page asks for at a time ("k_default"; its "more" button asks for as many again).
    ``query_slots``: searches inside the query engine at once (default :data:`QUERY_SLOTS`; a server of several
    worker processes gives each its share, serve/workers.py).
    A library opened here from a path is closed when the app shuts down."""
    from imgsearch.library import Library

    owns = not isinstance(library, Library)
    lib = Library(library, create=False) if owns else library
    if lib.models.scorer_threads is None:   # concurrent queries: each scores on its own core (models.py)
        lib.models.scorer_threads = max(1, _CORES // 2)
    query_slots = threading.BoundedSemaphore(max(1, int(query_slots or QUERY_SLOTS)))  # concurrent queries
    # (caches load once, under their lock)
    files: list[ThreadPoolExecutor] = []    # the files pool, made on first use, shut down with the app
    files_lock = threading.Lock()
    modes = supported_modes(lib)
    default_mode = "hybrid" if "hybrid" in modes else modes[0]
    from imgsearch.paths import thumbs_dir as _thumbs_dir

    thumbs_dir = _thumbs_dir(lib.path)  # <library dir>/thumbs
    from imgsearch.paths import user_cache_dir as _user_cache_dir

    # a read-only library: its own thumbnails are served, new ones are cached in its user cache folder
    thumbs_write = _user_cache_dir(lib.path) / "thumbs" if getattr(lib, "read_only", False) else None
    if warm_up:
        warm(lib)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            with files_lock:
                pools = [files.pop() for _ in list(files)]
            for pool in pools:
                pool.shutdown(wait=False, cancel_futures=True)
            if owns:
                lib.close()

    app = FastAPI(title="imgsearch", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  redirect_slashes=False)
    app.state.library = lib

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path")]
            parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
        return _error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(ImgsearchError)
    async def _imgsearch_error(_request, exc: ImgsearchError):
        """The one place an imgsearch error becomes an HTTP status: its kind's ``http_status``."""
        if isinstance(exc, NotFoundError):
            log.info("refused: %s", exc)  # the reason may name files: for the log, not for the client
            return _error(exc.http_status, "no such photo")
        if exc.http_status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return _error(exc.http_status, str(exc) or type(exc).__name__)

    def _storage(_request, exc: Exception):
        """A failure of the disk or the database file (damaged page, disk full): the one-line StoreError."""
        from imgsearch.errors import StoreError, storage_error

        mapped = storage_error(exc) or StoreError(f"the library database failed: {type(exc).__name__}")
        log.warning("%s: %s", type(exc).__name__, exc)
        return _error(mapped.http_status, str(mapped))

    import sqlite3

    from sqlalchemy.exc import DBAPIError

    app.add_exception_handler(DBAPIError, _storage)
    app.add_exception_handler(sqlite3.Error, _storage)

    @app.exception_handler(404)
    async def _404(_request, _exc):
        return _error(404, "not found")

    # ------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ------------------------------------------------------------------ API
    @app.get("/api/info")
    def info():
        import imgsearch

        return JSONResponse({
            "version": imgsearch.__version__,
            "db_path": str(lib.path),
            "modes": [{"id": m, "label": MODE_LABELS.get(m, m)} for m in modes],
            "default_mode": default_mode,
            "k_default": max(1, min(MAX_K, int(page_size))),
            "k_max": MAX_K,
            "max_query_chars": MAX_QUERY_CHARS,
            "thumb_short_side": thumbs.THUMB_SHORT,
        }, headers={"cache-control": API_CACHE})

    @app.get("/api/search")
    def search(q: str | None = None, k: int = Query(DEFAULT_K, ge=1, le=MAX_K), mode: str | None = None,
               folder: str | None = None, like: str | None = None, rerank: bool = True,
               min_score: float | None = Query(None, allow_inf_nan=False), after: str | None = None,
               before: str | None = None, sort: str = "relevance", near: str | None = None,
               within: float | None = Query(None, allow_inf_nan=False)):
        folder = clean_folder(lib, folder)
        dated = dict(after=clean_date(after), before=clean_date(before), sort=(sort or "relevance").strip())
        place = clean_near(lib, near, within)
        if place is not None:   # resolved once: the answer says which place the name was taken for
            dated["near"] = place
        has_text = q is not None and bool(q.strip())
        if like is not None and like.strip() and not has_text:
            pid = thumbs.parse_id(like.strip())
            with query_slots:
                t0 = time.perf_counter()
                hits = details.similar(lib, pid, k=k, folder=folder, **dated)
                took = (time.perf_counter() - t0) * 1000
            src = details.photo_details(lib, pid)
            body = {"query": None, "mode": "like",
                    "like": {"id": pid, "name": src["name"], "caption": src["caption"]}}
        elif not has_text and (dated["after"] or dated["before"] or place is not None or dated["sort"] != "relevance"):
            with query_slots:                       # no words: the photos in the date range, by date
                t0 = time.perf_counter()
                hits = lib.query(None, k=k, in_folder=folder, **dated)
                took = (time.perf_counter() - t0) * 1000
            body = {"query": None, "mode": "date"}
        else:
            text = clean_query(q)
            mode = (mode or default_mode).strip()
            if mode not in modes:
                raise BadRequest(f"unsupported mode {mode[:40]!r}: this library supports {', '.join(modes)}")
            pid = thumbs.parse_id(like.strip()) if like is not None and like.strip() else None
            if pid is not None:                     # words and "more like this": both, fused (as the CLI's --like)
                src = details.photo_details(lib, pid)
            with query_slots:
                t0 = time.perf_counter()
                hits = lib.query(text, k=k, mode=mode, in_folder=folder, like=pid, rerank=rerank,
                                 min_score=min_score, **dated)
                took = (time.perf_counter() - t0) * 1000
            body = {"query": text, "mode": mode, "rerank": rerank, "min_score": min_score}
            if pid is not None:
                body["like"] = {"id": pid, "name": src["name"], "caption": src["caption"]}
        body.update(dated)
        if place is not None:
            body["near"] = {"place": place.label, "lat": place.lat, "lon": place.lon, "within_km": place.km}
        results = [hit_json(h) for h in hits]
        body.update({"folder": folder, "k": k, "took_ms": round(took, 1), "count": len(results),
                     "results": results})
        return JSONResponse(body, headers={"cache-control": API_CACHE})

    @app.get("/api/photo/{photo_id}")
    def photo_info(photo_id: str):
        pid = thumbs.parse_id(photo_id)
        d = details.photo_details(lib, pid)
        d["thumb_url"] = f"/thumb/{pid}"
        d["photo_url"] = f"/photo/{pid}"
        return JSONResponse(d, headers={"cache-control": API_CACHE})

    @app.get("/api/status")
    def status(max_errors: int = Query(500, ge=0, le=100_000)):
        st = lib.status()
        errs = lib.errors()
        st = dict(st, modes=list(modes), failed_files=[{"path": p, "name": os.path.basename(p), "reason": r}
                                                      for p, r in errs[:max_errors]],
                  failed_files_total=len(errs))
        return JSONResponse(st, headers={"cache-control": API_CACHE})

    @app.get("/api/home")
    def home(k: int = Query(DEFAULT_K, ge=1, le=MAX_K), n: int = Query(6, ge=0, le=50)):
        recent = [dict(hit_json(h), score=None) for h in lib.recent(k)]
        return JSONResponse({"summary": lib.summary(), "recent": recent, "suggestions": lib.suggestions(n)},
                            headers={"cache-control": API_CACHE})

    @app.get("/api/places")
    def places_list():
        return JSONResponse({"places": lib.places()}, headers={"cache-control": API_CACHE})

    @app.get("/api/folders")
    def folders(limit: int = Query(2000, ge=1, le=100_000)):
        fs, truncated = details.folders(lib, limit)
        return JSONResponse({"folders": fs, "truncated": truncated}, headers={"cache-control": API_CACHE})

    # ------------------------------------------------------------------ files
    # made on the files pool, never on the threads the queries run on
    def _checked(photo_id: str) -> thumbs.PhotoFile:
        return thumbs.locate(lib.store, thumbs.parse_id(photo_id))

    async def _on_files_pool(fn, *args):
        with files_lock:
            if not files:
                files.append(ThreadPoolExecutor(max_workers=FILE_WORKERS, thread_name_prefix="imgsearch-files"))
            pool = files[0]
        return await asyncio.wrap_future(pool.submit(fn, *args))

    @app.get("/thumb/{photo_id}")
    async def thumb(photo_id: str, request: Request):
        return await _on_files_pool(_thumb, photo_id, request)

    @app.get("/photo/{photo_id}")
    async def photo(photo_id: str, request: Request):
        return await _on_files_pool(_photo, photo_id, request)

    def _thumb(photo_id: str, request: Request):
        pf = _checked(photo_id)
        headers = {"etag": pf.thumb_etag, "cache-control": THUMB_CACHE}
        if _etag_matches(request, pf.thumb_etag):
            return Response(status_code=304, headers=headers)
        return Response(thumbs.thumbnail(pf, thumbs_dir, thumbs_write), media_type="image/jpeg", headers=headers)

    def _photo(photo_id: str, request: Request):
        pf = _checked(photo_id)
        headers = {"etag": pf.etag, "cache-control": PHOTO_CACHE}
        if _etag_matches(request, pf.etag):
            return Response(status_code=304, headers=headers)
        ctype, data = thumbs.web_image(pf)
        if data is not None:
            return Response(data, media_type=ctype, headers=headers)
        f = thumbs.open_checked(pf)
        headers["content-length"] = str(pf.st.st_size)
        return StreamingResponse(_read_file(f, pf.st.st_size), media_type=ctype, headers=headers)

    app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
    return app


def _read_file(f, size: int, chunk: int = 256 * 1024):
    try:
        left = size
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        f.close()
