"""Photo files for the web app: find a library photo's file safely, make and cache thumbnails.

Safety rules (every one is tested in tests/test_serve_api.py):

* Photos are addressed by integer id only; the path comes from the store, never from the request.
  Failed files (``photos.error`` set) are not served.
* The stored path must be absolute and normalised, and still exist as a regular file.
* If the stored path resolves (``realpath``) somewhere else — it, or a folder on the way, is a
  symlink — the target must still be the file that was indexed: same size and same mtime (the
  scanner records the target's stat for symlinked files). A photo swapped for a symlink to some
  other file after indexing is refused.
* The file is opened by its real path with ``O_NOFOLLOW`` and the opened file must be the one that
  was checked (same device and inode), so a swap between the check and the open is refused too.

Thumbnails: Pillow, JPEG draft mode, ``ImageOps.exif_transpose``, short side :data:`THUMB_SHORT` (never
enlarged) with the long side at most :data:`THUMB_LONG_MAX` (:func:`thumb_size`: a 4:3 photo gives 320 × 240,
an 8000 × 1000 panorama 1920 × 240 instead of a blurry 320 × 40; the page crops them to its cards), cached as ``<library dir>/thumbs/<content_hash>.jpg`` (keyed by content, so a moved or renamed photo
keeps its thumbnail; a read-only library's new ones go to its folder in the user cache,
``paths.user_cache_dir``), written atomically (:func:`imgsearch.files.atomic_write`). A photo whose file
changed since it was indexed gets a fresh, uncached thumbnail (its stored hash is stale).

Every refusal is :class:`NotServable` (a :class:`imgsearch.errors.NotFoundError`): the client gets a
plain 404, the reason goes to the log.
"""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from imgsearch.errors import NotFoundError
from imgsearch.files import atomic_write

try:  # HEIC/HEIF photos (the indexer registers it too)
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - optional native library: a broken build may raise anything; serve without
    pass

THUMB_SHORT = 240             # a thumbnail's short side (smaller photos are not enlarged) ...
THUMB_LONG_MAX = 1920         # ... and its long side at most (a 50:1 strip gets a thinner short side)
THUMB_RULE = f"{THUMB_SHORT}s{THUMB_LONG_MAX}"   # in the ETag: a rule change reaches browsers' caches
THUMB_QUALITY = 82
FULL_MAX_SIDE = 4096          # photos in formats a browser cannot show are sent as JPEG, this big at most
# Formats every browser shows as they are: served byte for byte.
WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
               "BMP": "image/bmp"}
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_O_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


class NotServable(NotFoundError):
    """This id does not name a photo we may serve. The reason is for logs; clients just get 404."""


@dataclass
class PhotoFile:
    id: int
    path: str                 # as stored
    real: str                 # realpath at check time
    content_hash: str | None  # as stored (None or malformed → no thumbnail cache)
    st: os.stat_result        # of ``real``, at check time
    unchanged: bool           # size and mtime still those recorded at indexing
    width: int | None = None  # as stored (shown orientation): the size a cached thumbnail must have
    height: int | None = None

    @property
    def cache_key(self) -> str | None:
        """The thumbnail cache key: the content hash, when it still describes the file."""
        if self.unchanged and self.content_hash and _HASH_RE.match(self.content_hash):
            return self.content_hash
        return None

    @property
    def etag(self) -> str:
        """Strong validator for the full photo (changes whenever the file does)."""
        return f'"p{self.id}-{self.st.st_ino:x}-{self.st.st_size:x}-{self.st.st_mtime_ns:x}"'

    @property
    def thumb_etag(self) -> str:
        key = self.cache_key
        if key:
            return f'"t{THUMB_RULE}-{key[:32]}"'
        return f'"t{THUMB_RULE}-{self.id}-{self.st.st_ino:x}-{self.st.st_size:x}-{self.st.st_mtime_ns:x}"'


def parse_id(raw: str) -> int:
    """A photo id from a URL segment: plain ASCII digits, 1..2**63-1; anything else → NotServable."""
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotServable(f"not a photo id: {raw!r}")
    value = int(raw)
    if value < 1:
        raise NotServable(f"not a photo id: {raw!r}")
    return value


def locate(store, photo_id: int) -> PhotoFile:
    """Check that ``photo_id`` is a photo of the library whose file may be served (see module doc)."""
    from sqlalchemy import select

    from imgsearch.store.models import Photo

    with store.session() as s:
        row = s.execute(select(Photo.path, Photo.content_hash, Photo.size, Photo.mtime_ns, Photo.width, Photo.height)
                        .where(Photo.id == photo_id, Photo.error.is_(None))).first()
    if row is None:
        raise NotServable(f"photo {photo_id} is not in the library")
    path = row.path
    if not isinstance(path, str) or "\x00" in path or not os.path.isabs(path) or os.path.normpath(path) != path:
        raise NotServable(f"photo {photo_id}: stored path is not a clean absolute path")
    try:
        real = os.path.realpath(path, strict=True)
        st = os.lstat(real)
    except (OSError, ValueError, RuntimeError) as e:
        raise NotServable(f"photo {photo_id}: {path} is gone ({e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotServable(f"photo {photo_id}: {real} is not a regular file")
    unchanged = st.st_size == row.size and st.st_mtime_ns == row.mtime_ns
    if real != path and not unchanged:
        raise NotServable(f"photo {photo_id}: {path} now leads to {real}, which is not the indexed file")
    return PhotoFile(id=photo_id, path=path, real=real, content_hash=row.content_hash, st=st, unchanged=unchanged,
                     width=row.width, height=row.height)


def open_checked(pf: PhotoFile):
    """Open the checked file (binary, read-only); refuse if it is no longer the same file."""
    try:
        fd = os.open(pf.real, _O_FLAGS)  # O_NOFOLLOW: the real path's last part must not turn into a link
    except OSError as e:
        raise NotServable(f"photo {pf.id}: cannot open {pf.real}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (pf.st.st_dev, pf.st.st_ino):
            raise NotServable(f"photo {pf.id}: {pf.real} changed while being opened")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f


# ---------------------------------------------------------------------------- images

def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        import numpy as np

        a = np.nan_to_num(np.asarray(im).astype(np.float64))
        hi = float(a.max()) if a.size else 0.0
        if hi > 255:
            a = a * (255.0 / (65535.0 if hi <= 65535 else hi))
        elif im.mode == "F" and hi <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def thumb_size(width: int, height: int) -> tuple[int, int]:
    """The thumbnail size of a ``width`` × ``height`` photo: short side :data:`THUMB_SHORT` (never enlarged),
    long side at most :data:`THUMB_LONG_MAX`, the aspect ratio kept."""
    w, h = max(1, int(width)), max(1, int(height))
    scale = min(1.0, THUMB_SHORT / min(w, h), THUMB_LONG_MAX / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _render(f, max_side: int, quality: int, fit=None) -> bytes:
    """Decode ``f``, apply EXIF orientation, fit in ``max_side`` px (or in ``fit(width, height)``), encode
    as JPEG."""
    if fit is None:
        fit = lambda w, h: (max_side, max_side)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(f)
        im.draft("RGB", fit(*im.size))     # JPEG: DCT scaling, both sides stay >= the box's
        im = ImageOps.exif_transpose(im)   # loads; a no-op without an orientation tag
        im = _to_rgb(im)
        im.thumbnail(fit(*im.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()


def make_thumbnail(f) -> bytes:
    """A thumbnail of the photo file ``f`` (JPEG bytes, :func:`thumb_size`)."""
    return _render(f, 0, THUMB_QUALITY, fit=thumb_size)


def _fits(data: bytes, pf: PhotoFile) -> bool:
    """Whether a cached thumbnail has the size :func:`thumb_size` gives the photo now (one made under an
    older rule, such as the 320 × 40 of a panorama, is made again). Unknown stored size: any."""
    if not pf.width or not pf.height:
        return True
    try:
        with Image.open(io.BytesIO(data)) as im:   # the header only
            w, h = im.size
    except Exception:  # a damaged cache file: made again
        return False
    ew, eh = thumb_size(pf.width, pf.height)
    return abs(w - ew) <= 2 and abs(h - eh) <= 2


def web_image(pf: PhotoFile) -> tuple[str, bytes | None]:
    """(content type, None) when the file can be sent as it is, else ("image/jpeg", transcoded bytes)."""
    with open_checked(pf) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                fmt = Image.open(f).format
        except Exception as e:  # Pillow raises many types for damaged files (OSError, SyntaxError, bombs...): 404
            raise NotServable(f"photo {pf.id}: not an image any more ({type(e).__name__})") from None
        if fmt in WEB_FORMATS:
            return WEB_FORMATS[fmt], None
        f.seek(0)
        try:
            return "image/jpeg", _render(f, FULL_MAX_SIDE, 90)
        except Exception as e:  # as above: any decoder failure means "cannot serve", never a 500
            raise NotServable(f"photo {pf.id}: cannot convert {fmt} ({type(e).__name__}: {e})") from None


def thumbnail(pf: PhotoFile, thumbs_dir: str | os.PathLike, write_dir: str | os.PathLike | None = None) -> bytes:
    """The thumbnail's JPEG bytes, from the cache or made now (and cached when the hash is valid).
    ``write_dir``: where new thumbnails are cached when ``thumbs_dir`` cannot be written (a read-only
    library: its own thumbnails are still used); looked in too."""
    key = pf.cache_key
    dirs = [Path(thumbs_dir)] + ([Path(write_dir)] if write_dir is not None else [])
    cached = dirs[-1] / f"{key}.jpg" if key else None
    for d in dirs if key else ():
        try:
            data = (d / f"{key}.jpg").read_bytes()
            if data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9" and _fits(data, pf):   # a whole JPEG
                return data                                                              # (else made again)
        except OSError:
            pass
    with open_checked(pf) as f:
        try:
            data = make_thumbnail(f)
        except Exception as e:  # as in web_image: any decoder failure means "cannot serve", never a 500
            raise NotServable(f"photo {pf.id}: cannot make a thumbnail ({type(e).__name__}: {e})") from None
    if cached is not None:
        try:
            atomic_write(cached, data, durable=False, clean=False)   # a cache: made again if lost
        except OSError:  # an unwritable library folder: the thumbnail is served, just not cached
            pass
    return data
