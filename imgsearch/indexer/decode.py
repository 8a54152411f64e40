"""Stage 2 of indexing: decode one photo safely into a small RGB image (+ size and capture time).

Every failure is a :class:`DecodeError` carrying a short human reason (stored in ``photos.error``):
"not an image", "empty file (0 bytes)", "truncated or corrupt JPEG", "permission denied",
"file vanished", "image too large: 30000x30000 px exceeds the 89 Mpx decompression-bomb limit"...
Truncated files are never decoded silently as grey: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left
off and ``load()`` errors are mapped to DecodeError.

Speed (4000x3000 JPEG, quality 90, 3.3 MB, made with Pillow 13 from an upscaled Flickr8k photo plus
noise; medians of 10-20 runs; the 2-core dev box was fully loaded by a training job — load average
2.4-4.2 — so every figure is inflated versus an idle core; min in brackets):
    full decode + resize to 224x224 .......................... 165-177 ms (161)
    draft 1/8 → 500x375, decode only ........................... 34-61 ms (29); resize to 224: +1 ms
    draft 1/4 → 1000x750 / 1/2 → 2000x1500, decode + resize .... 60 / 70 ms
    open_photo(path) (draft 1/8 + EXIF + RGB + reduce) ......... 60 ms in the same run as draft's 61 ms
                                                                 (i.e. no measurable overhead over a bare draft)
    to_model_input(photo) (squash 500x375 → 224, to tensor) ...... 1.7 ms
    content_hash (full SHA-256 of the 3.3 MB file) ................ 2.2 ms
    djpeg -scale 1/8 ............................................. not measured: djpeg is not installed
Draft mode is ~3x faster than a full decode.  What remains is libjpeg's entropy (Huffman) decoding
of the whole 3.3 MB stream, which DCT scaling cannot skip; the ~25 ms target needs an idle core.

What ``open_photo`` does:
  1. ``os.open`` + ``fstat`` (regular file? empty?) — errors mapped to reasons;
  2. ``Image.open`` — Pillow's decompression-bomb check; the 1x-2x "warning" band is an error too,
     so the effective limit is ``Image.MAX_IMAGE_PIXELS`` itself (89.5 Mpx by default: 108 Mpx
     phone photos are refused; raise the global at start-up to accept them — it is read per call).
     The warning is silenced with ``warnings.catch_warnings`` (process-global, not thread-safe in
     Python 3.11; harmless — at worst a stray warning is printed);
  3. ``draft("RGB", (target, target))`` — JPEG DCT scaling by the strongest of 1/8, 1/4, 1/2, 1/1
     that keeps both sides >= target (a no-op for other formats);
  4. ``load()`` — the first frame only for animated GIF/WebP/APNG, first page of a TIFF;
  5. to RGB: CMYK, 1-bit, L, P, YCbCr → RGB; 16-bit greyscale (I;16*, I) scaled to 8 bits
     (not clipped); alpha (RGBA, LA, PA, P/L/RGB with tRNS) composited onto white;
  6. ``Image.reduce`` by an integer factor so the short side lands in [target, 2*target)
     (bounded memory for huge PNG/TIFF; nothing is lost for a target-sized model input);
  7. EXIF orientation 2-8 applied (same table as ``ImageOps.exif_transpose``);
     ``width``/``height`` are the ORIGINAL header size, swapped for orientations 5-8.
HEIC/HEIF: ``pillow_heif`` is registered at import when installed (``HEIF_SUPPORTED``); libheif
applies the rotation itself and resets the EXIF orientation to 1, so nothing is rotated twice.
ICC profiles are ignored (pixel values are used as sRGB).

Broad ``except Exception`` blocks here are deliberate: Pillow and its plugins raise errors of any type on
hostile or damaged files, and each becomes a DecodeError with a one-line reason (or an EXIF field ignored),
so that one bad photo never stops a run.
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from imgsearch.errors import DecodeError

if TYPE_CHECKING:  # torch is only needed by to_model_input
    import torch

try:  # HEIC/HEIF (iPhone photos) via libheif
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except Exception:  # missing, or a broken native library: HEIC files fail with a clear reason
    HEIF_SUPPORTED = False

_O_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)

# EXIF tags
_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_DATETIME = 306
_DATETIME_ORIGINAL = 36867
_DATETIME_DIGITIZED = 36868
_SUBSEC = {_DATETIME: 37520, _DATETIME_ORIGINAL: 37521, _DATETIME_DIGITIZED: 37522}

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}



@dataclass
class DecodedPhoto:
    image: Image.Image            # RGB; short side in [target, 2*target) unless the photo is smaller
    width: int                    # original pixel size, after EXIF rotation
    height: int
    taken_at: datetime | None     # EXIF DateTimeOriginal (naive, camera clock), else Digitized, else DateTime
    format: str | None = None     # Pillow format name: "JPEG", "PNG", "HEIF", ...
    gps: tuple[float, float] | None = None  # EXIF GPS (lat, lon) in degrees, when valid (see gps_from_exif)


def open_photo(path: str | os.PathLike[str], target: int = 224) -> DecodedPhoto:
    """Decode ``path`` into a :class:`DecodedPhoto`; raise :class:`DecodeError` on any failure."""
    path = os.fspath(path)
    try:
        fd = os.open(path, _O_FLAGS)  # O_NONBLOCK: never hang on a FIFO
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        raise _os_error(exc) from None
    try:
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise _os_error(exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("is a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        if st.st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        f = os.fdopen(fd, "rb")
        fd = -1  # owned by f now
        with f:
            return _decode(f, target, path)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError("out of memory while decoding") from None
    except Exception as exc:  # anything unforeseen still leaves as a DecodeError
        raise DecodeError("could not decode image", f"{type(exc).__name__}: {exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)


def to_model_input(photo: DecodedPhoto, size: int = 224, mode: str = "squash") -> "torch.Tensor":
    """(3, size, size) float tensor normalised for the encoder (see model.preprocess)."""
    from imgsearch.model.preprocess import fit_square, to_tensor

    return to_tensor(fit_square(photo.image, size, mode))


# --------------------------------------------------------------------------------------------

def _os_error(exc: BaseException) -> DecodeError:
    if isinstance(exc, FileNotFoundError):
        return DecodeError("file vanished")
    if isinstance(exc, PermissionError):
        return DecodeError("permission denied")
    if isinstance(exc, IsADirectoryError):
        return DecodeError("is a folder")
    if isinstance(exc, OSError):
        return DecodeError(f"read error: {exc.strerror or exc}")
    return DecodeError("could not open file", f"{type(exc).__name__}: {exc}")


def _mpx(n: int) -> str:
    return f"{n // 1_000_000} Mpx" if n >= 1_000_000 else f"{n} px"


def _too_large(size: tuple[int, int] | None, pixels: int | None, limit: int) -> DecodeError:
    what = f"{size[0]}x{size[1]} px" if size else (_mpx(pixels) if pixels else "image")
    return DecodeError(f"image too large: {what} exceeds the {_mpx(limit)} decompression-bomb limit")


def _header_size(f) -> tuple[int, int] | None:
    """Size from the header of an image Pillow refused to open as a bomb (plugin factories do
    not run the bomb check themselves).  Best effort; None when it cannot tell."""
    try:
        f.seek(0)
        prefix = f.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            ok = accept is None or accept(prefix)
            if ok and not isinstance(ok, str):
                f.seek(0)
                try:
                    return factory(f, "").size
                except Exception:  # noqa: BLE001 - see the module docstring
                    continue
    except Exception:  # noqa: BLE001 - see the module docstring
        pass
    return None


def _decode(f, target: int, path: str) -> DecodedPhoto:
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # we check the 1x-2x band ourselves below (with the image size in the message)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(f)
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(_header_size(f), int(m.group(1)) if m else None, limit or 0) from None
    except UnidentifiedImageError:
        raise _not_an_image(f, path) from None
    except MemoryError:
        raise DecodeError("out of memory while reading image header") from None
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error, not a parser complaint
            raise _os_error(exc) from None
        raise _bad_header(f, exc) from None
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        raise _bad_header(f, exc) from None

    fmt = im.format or "image"
    w0, h0 = im.size
    if w0 <= 0 or h0 <= 0:
        raise DecodeError(f"corrupt {fmt}: {w0}x{h0} px")
    if limit and w0 * h0 > limit:
        raise _too_large((w0, h0), None, limit)

    try:
        if target and target > 0:
            im.draft("RGB", (target, target))  # JPEG only; other formats ignore it
        im.load()
    except MemoryError:
        raise DecodeError(f"out of memory decoding a {w0}x{h0} px {fmt}") from None
    except Image.DecompressionBombError as exc:
        raise _too_large((w0, h0), None, limit or 0) from None
    except Exception as exc:  # OSError "image file is truncated", SyntaxError "broken PNG file", ...
        raise DecodeError(f"truncated or corrupt {fmt}", f"{type(exc).__name__}: {exc}") from None

    orientation, taken_at = _read_exif(im)

    try:
        rgb = _to_rgb(im)
        if target and target > 0:
            factor = min(rgb.size) // target
            if factor >= 2:
                rgb = rgb.reduce(factor)
        method = _TRANSPOSE.get(orientation)
        if method is not None:
            rgb = rgb.transpose(method)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError(f"out of memory converting a {w0}x{h0} px {fmt}") from None
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        raise DecodeError(f"truncated or corrupt {fmt}", f"{type(exc).__name__}: {exc}") from None

    if orientation in (5, 6, 7, 8):
        w0, h0 = h0, w0
    return DecodedPhoto(image=rgb, width=w0, height=h0, taken_at=taken_at, format=im.format,
                        gps=gps_from_exif(im))


_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


def _sniff(f) -> str | None:
    """The file type its magic bytes claim, for a file Pillow could not open."""
    try:
        f.seek(0)
        head = f.read(12)
    except Exception:  # noqa: BLE001 - see the module docstring
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return "HEIF"
    return None


def _bad_header(f, exc: BaseException) -> DecodeError:
    fmt = _sniff(f)
    reason = f"truncated or corrupt {fmt}" if fmt else "corrupt image header"
    return DecodeError(reason, f"{type(exc).__name__}: {exc}")


def _not_an_image(f, path: str) -> DecodeError:
    fmt = _sniff(f)
    heic_name = os.path.splitext(path)[1].lower() in (".heic", ".heif")
    if not HEIF_SUPPORTED and (fmt == "HEIF" or heic_name):
        return DecodeError("HEIC/HEIF support is not installed (pip install pillow-heif)")
    if fmt:
        return DecodeError(f"truncated or corrupt {fmt}", "Pillow could not identify it")
    return DecodeError("not an image")


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        import numpy as np

        a = np.asarray(im)
        if mode in _SIXTEEN_BIT:
            a8 = (a.astype(np.uint32) >> 8).astype(np.uint8)
        elif mode == "I":
            hi = int(a.max()) if a.size else 0
            lo = int(a.min()) if a.size else 0
            if lo >= 0 and hi <= 255:
                a8 = a.astype(np.uint8)
            elif lo >= 0 and hi <= 65535:  # 16-bit data in a 32-bit container (PNG/TIFF)
                a8 = (a >> 8).astype(np.uint8)
            else:
                a8 = ((a - lo) * (255.0 / max(1, hi - lo))).astype(np.uint8)
        else:  # "F"
            a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            if a.size and float(a.max()) <= 1.0 and float(a.min()) >= 0.0:
                a = a * 255.0
            a8 = np.clip(a, 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(a8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise DecodeError(f"unsupported colour mode {mode}", str(exc)) from None


def _read_exif(im: Image.Image) -> tuple[int, datetime | None]:
    """(orientation 1-8, capture time) from EXIF; garbage values are ignored."""
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - see the module docstring
        return 1, None
    orientation = 1
    try:
        o = exif.get(_ORIENTATION, 1)
        if isinstance(o, (tuple, list)) and o:
            o = o[0]
        o = int(o)
        if 1 <= o <= 8:
            orientation = o
    except Exception:  # noqa: BLE001 - see the module docstring
        pass
    taken_at = None
    try:
        try:
            sub = exif.get_ifd(_EXIF_IFD)
        except Exception:  # noqa: BLE001 - see the module docstring
            sub = {}
        for tag, ifds in (
            (_DATETIME_ORIGINAL, (sub, exif)),
            (_DATETIME_DIGITIZED, (sub, exif)),
            (_DATETIME, (exif, sub)),
        ):
            for ifd in ifds:
                if tag in ifd:
                    taken_at = parse_exif_datetime(ifd.get(tag), ifd.get(_SUBSEC[tag]) or sub.get(_SUBSEC[tag]))
                    if taken_at is not None:
                        return orientation, taken_at
    except Exception:  # noqa: BLE001 - see the module docstring
        taken_at = None
    return orientation, taken_at


_GPS_IFD = 0x8825
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


def gps_from_exif(im_or_exif) -> tuple[float, float] | None:
    """(latitude, longitude) in degrees from the EXIF GPS IFD of an opened image (or its ``Image.Exif``),
    or None: no GPS IFD, a missing N/S or E/W reference, degrees/minutes/seconds that are not numbers,
    negative, or have a zero denominator (NaN), minutes or seconds over 60, a position off the globe, or
    the 0/0 placeholder (imgsearch.places.valid_gps). Never raises."""
    from imgsearch.places import valid_gps

    try:
        exif = im_or_exif.getexif() if hasattr(im_or_exif, "getexif") else im_or_exif
        ifd = exif.get_ifd(_GPS_IFD)
        if not ifd:
            return None
        lat = _dms(ifd.get(_GPS_LAT), ifd.get(_GPS_LAT_REF), "N", "S")
        lon = _dms(ifd.get(_GPS_LON), ifd.get(_GPS_LON_REF), "E", "W")
        if lat is None or lon is None:
            return None
        return valid_gps(lat, lon)
    except Exception:  # noqa: BLE001 - see the module docstring
        return None


def _dms(value, ref, plus: str, minus: str) -> float | None:
    """Degrees from EXIF (degrees, minutes, seconds) rationals and a reference letter; None when bad."""
    import math

    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    ref = str(ref or "").strip("\x00 ").upper()[:1]
    if ref not in (plus, minus):
        return None
    parts = list(value) if isinstance(value, (tuple, list)) else [value]
    if not 1 <= len(parts) <= 3:
        return None
    nums = []
    for p in parts:
        if isinstance(p, tuple) and len(p) == 2:       # (numerator, denominator) as older Pillows give it
            p = p[0] / p[1] if p[1] else float("nan")
        x = float(p)   # IFDRational with a zero denominator → nan
        if not math.isfinite(x) or x < 0:
            return None
        nums.append(x)
    if any(x > 60 for x in nums[1:]):
        return None
    deg = sum(x / 60 ** k for k, x in enumerate(nums))
    return -deg if ref == minus else deg


def read_gps(path: str | os.PathLike[str]) -> tuple[float, float] | None:
    """The GPS position in a file's EXIF, reading its header only (no pixels are decoded); None when
    it has none, or the file cannot be read."""
    try:
        with warnings.catch_warnings():   # a large photo's bomb warning: its header is all that is read
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(os.fspath(path)) as im:
                return gps_from_exif(im)
    except Exception:  # noqa: BLE001 - see the module docstring
        return None


_DT_RE = re.compile(
    r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})"
    r"(?:[ T]+(\d{1,2})[:.](\d{1,2})(?:[:.](\d{1,2}))?)?"
)


def parse_exif_datetime(value: object, subsec: object = None) -> datetime | None:
    """Parse an EXIF date ("2021:06:01 12:34:56", also with '-' or '/' separators, trailing NULs,
    missing seconds).  Returns None for blanks, "0000:00:00 00:00:00", impossible dates and years
    outside 1800-2200."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if not isinstance(value, str):
        return None
    m = _DT_RE.match(value.replace("\x00", " "))
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hh, mm, ss = (int(g) if g else 0 for g in m.group(4, 5, 6))
    if not 1800 <= y <= 2200:
        return None
    ss = min(ss, 59)  # leap second
    micro = 0
    if isinstance(subsec, bytes):
        subsec = subsec.decode("ascii", "ignore")
    if isinstance(subsec, (str, int)):
        digits = re.match(r"\s*(\d+)", str(subsec))
        if digits:
            micro = int(digits.group(1)[:6].ljust(6, "0"))
    try:
        return datetime(y, mo, d, hh, mm, ss, micro)
    except (ValueError, OverflowError):
        return None


__all__ = ["DecodeError", "DecodedPhoto", "HEIF_SUPPORTED", "gps_from_exif", "open_photo", "parse_exif_datetime",
           "read_gps", "to_model_input"]
