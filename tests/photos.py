"""Reusable picture-making helpers for tests (no test data files in the repo: draw them).

    from photos import make_photo, make_bad_files, KINDS

* ``make_photo(path, kind="red_circle", size=(640, 480), fmt=None, exif_orientation=None,
  taken_at=None, mode=None, quality=90) -> Path`` draws a simple, distinct scene and saves it.
  ``fmt`` defaults to the format implied by the file suffix (JPEG when unknown).
* ``draw_scene(kind, size) -> PIL.Image`` (RGB) if you only need pixels.
* ``make_bad_files(folder) -> {file name: substring expected in DecodeError's reason}``.
* ``png_header_bomb(width, height) -> bytes``: a tiny but valid-looking PNG whose IHDR claims
  ``width x height`` pixels (a decompression bomb for Pillow's header check).
* ``IS_ROOT``: running as root (chmod-based permission tests cannot work; skip them).
* ``heif_writable()``: True when pillow_heif can encode HEIF here (tests should skip otherwise).
"""
from __future__ import annotations

import os
import random
import struct
import zlib
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw

# chmod 000 does not stop root from reading: permission tests must skip under root.
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

KINDS = (
    "red_circle",      # red disc on white
    "blue_square",     # blue square on pale yellow
    "green_triangle",  # green triangle on white
    "stripes",         # black/white vertical stripes
    "checker",         # 8x8 black/white checkerboard
    "gradient",        # horizontal red→blue gradient
    "sky",             # blue top half, green bottom half ("landscape")
    "marker",          # white, with a solid black square in the TOP-LEFT corner (orientation tests)
    "noise",           # seeded RGB noise (large files, poorly compressible)
)

SUFFIX_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP",
    ".tif": "TIFF", ".tiff": "TIFF", ".heic": "HEIF", ".heif": "HEIF",
}


def draw_scene(kind: str = "red_circle", size: tuple[int, int] = (640, 480)) -> Image.Image:
    w, h = size
    if kind == "red_circle":
        im = Image.new("RGB", size, "white")
        r = min(w, h) * 0.35
        ImageDraw.Draw(im).ellipse((w / 2 - r, h / 2 - r, w / 2 + r, h / 2 + r), fill=(220, 20, 20))
    elif kind == "blue_square":
        im = Image.new("RGB", size, (250, 245, 200))
        s = min(w, h) * 0.3
        ImageDraw.Draw(im).rectangle((w / 2 - s, h / 2 - s, w / 2 + s, h / 2 + s), fill=(20, 40, 210))
    elif kind == "green_triangle":
        im = Image.new("RGB", size, "white")
        ImageDraw.Draw(im).polygon([(w / 2, h * 0.1), (w * 0.1, h * 0.9), (w * 0.9, h * 0.9)], fill=(20, 170, 40))
    elif kind == "stripes":
        im = Image.new("RGB", size, "white")
        d = ImageDraw.Draw(im)
        step = max(2, w // 16)
        for x in range(0, w, 2 * step):
            d.rectangle((x, 0, x + step - 1, h), fill="black")
    elif kind == "checker":
        im = Image.new("RGB", size, "white")
        d = ImageDraw.Draw(im)
        cw, ch = max(1, w // 8), max(1, h // 8)
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    d.rectangle((i * cw, j * ch, (i + 1) * cw - 1, (j + 1) * ch - 1), fill="black")
    elif kind == "gradient":
        row = Image.linear_gradient("L").rotate(90).resize((w, h))  # left dark → right bright
        im = Image.merge("RGB", (row.point(lambda v: 255 - v), Image.new("L", size, 30), row))
    elif kind == "sky":
        im = Image.new("RGB", size, (90, 150, 235))
        ImageDraw.Draw(im).rectangle((0, h // 2, w, h), fill=(40, 150, 50))
    elif kind == "marker":
        im = Image.new("RGB", size, "white")
        s = max(2, min(w, h) // 4)
        ImageDraw.Draw(im).rectangle((0, 0, s - 1, s - 1), fill="black")
    elif kind == "noise":
        rnd = random.Random(w * 100003 + h)
        im = Image.frombytes("RGB", size, rnd.randbytes(w * h * 3))
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    return im


def gps_ifd(lat: float, lon: float) -> dict:
    """The EXIF GPS IFD (tag 0x8825) of a position: N/S and E/W references, degrees/minutes/seconds rationals."""
    from PIL.TiffImagePlugin import IFDRational

    def dms(x: float):
        x = abs(x)
        d, m = int(x), int((x - int(x)) * 60)
        sec = round(((x - d) * 60 - m) * 60 * 1000)
        return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(sec, 1000))

    return {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}


def _exif_bytes(exif_orientation: int | None, taken_at: datetime | str | None, gps=None) -> bytes | None:
    if exif_orientation is None and taken_at is None and gps is None:
        return None
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = int(exif_orientation)
    if taken_at is not None:
        s = taken_at.strftime("%Y:%m:%d %H:%M:%S") if isinstance(taken_at, datetime) else str(taken_at)
        exif.get_ifd(0x8769)[36867] = s  # DateTimeOriginal, in the Exif sub-IFD
    if gps is not None:  # (lat, lon), or a whole GPS IFD as given (bad values)
        exif.get_ifd(0x8825).update(gps if isinstance(gps, dict) else gps_ifd(*gps))
    return exif.tobytes()


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    if mode in ("I;16", "I"):
        import numpy as np

        a = np.asarray(im.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
        return Image.fromarray(a if mode == "I;16" else a.astype(np.int32))  # uint16 → I;16, int32 → I
    if mode == "P":
        return im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return im.convert(mode)


def make_photo(
    path: str | Path,
    kind: str = "red_circle",
    size: tuple[int, int] = (640, 480),
    fmt: str | None = None,
    exif_orientation: int | None = None,
    taken_at: datetime | str | None = None,
    mode: str | None = None,
    quality: int = 90,
    gps: tuple[float, float] | dict | None = None,
) -> Path:
    """Draw ``kind`` at ``size`` and save it to ``path`` (parent folders created).

    ``size`` is the stored (unrotated) pixel size; with ``exif_orientation`` 5-8 a viewer shows it
    rotated.  ``mode`` converts before saving ("L", "CMYK", "P", "RGBA", "1", "I;16", ...).  ``gps``: an EXIF
    GPS position (lat, lon) in degrees, or a GPS IFD dict written as it is (see :func:`gps_ifd`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = (fmt or SUFFIX_FORMATS.get(path.suffix.lower(), "JPEG")).upper()
    im = draw_scene(kind, size)
    if mode:
        im = _to_mode(im, mode)
    kw: dict = {}
    exif = _exif_bytes(exif_orientation, taken_at, gps)
    if exif is not None:
        kw["exif"] = exif
    if fmt in ("JPEG", "WEBP", "HEIF"):
        kw["quality"] = quality
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    im.save(path, format=fmt, **kw)
    return path


def heif_writable() -> bool:
    try:
        import pillow_heif

        return bool(pillow_heif.libheif_info().get("HEIF"))
    except Exception:
        return False


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A ~100-byte 1-bit greyscale PNG whose IHDR claims width x height (CRCs valid)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def make_bad_files(folder: str | Path) -> dict[str, str]:
    """Write one file per kind of broken input into ``folder``.

    Returns ``{name: substring of the expected DecodeError reason}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        out[name] = reason

    put("empty.jpg", b"", "empty file")
    put("text.jpg", b"This is not a photo, just some text pretending to be one.\n" * 4, "not an image")
    put("random.png", random.Random(7).randbytes(4096), "not an image")

    good_jpg = folder / "_good.jpg"
    make_photo(good_jpg, "noise", (320, 240), quality=90)
    data = good_jpg.read_bytes()
    good_jpg.unlink()
    put("truncated.jpg", data[: len(data) // 2], "truncated or corrupt JPEG")
    put("header_only.jpg", data[:200], "truncated or corrupt JPEG")

    good_png = folder / "_good.png"
    make_photo(good_png, "noise", (200, 150))
    data = good_png.read_bytes()
    good_png.unlink()
    put("truncated.png", data[: len(data) // 2], "truncated or corrupt PNG")
    # flip bytes in the middle of the compressed pixel data (IDAT)
    mid = len(data) // 2
    put("corrupt.png", data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:], "corrupt PNG")

    put("bomb.png", png_header_bomb(30000, 30000), "image too large")     # > 2x limit: Pillow error
    put("bomb_warn.png", png_header_bomb(15000, 15000), "image too large")  # 1x-2x: Pillow only warns
    return out
