"""imgsearch.indexer.decode: safe decoding of real files drawn with Pillow."""
from __future__ import annotations

import os
import pickle
import random
from datetime import datetime

import pytest
from PIL import Image, ImageDraw, ImageFile

from imgsearch.indexer import decode
from imgsearch.indexer.decode import DecodeError, DecodedPhoto, open_photo, parse_exif_datetime, to_model_input
from photos import IS_ROOT, heif_writable, make_photo, png_header_bomb


def dark(px) -> bool:
    return sum(px) / 3 < 80


def light(px) -> bool:
    return sum(px) / 3 > 175


def near(px, want, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px, want))


# ---------------------------------------------------------------- bad input


def test_every_bad_file_gives_its_reason(bad_files):
    folder, expected = bad_files
    assert len(expected) >= 8
    for name, reason in expected.items():
        with pytest.raises(DecodeError) as ei:
            open_photo(folder / name)
        assert reason in str(ei.value), (name, str(ei.value), ei.value.detail)


def test_truncated_jpeg_is_not_decoded_as_grey(tmp_path):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    p = make_photo(tmp_path / "big.jpg", "noise", (1600, 1200))
    data = p.read_bytes()
    for frac in (0.3, 0.6, 0.95):
        q = tmp_path / f"cut{frac}.jpg"
        q.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(DecodeError, match="truncated or corrupt JPEG"):
            open_photo(q)  # draft (1/4 scale) still reads the whole entropy-coded stream


def test_bomb_reason_names_size_and_limit(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_bomb(30000, 30000))
    with pytest.raises(DecodeError) as ei:
        open_photo(p)
    limit_mpx = Image.MAX_IMAGE_PIXELS // 1_000_000
    assert str(ei.value) == f"image too large: 30000x30000 px exceeds the {limit_mpx} Mpx decompression-bomb limit"


@pytest.mark.parametrize("limit", [5000, 1000])  # 10k px: 1x-2x (Pillow warns) and >2x (Pillow errors)
def test_decompression_bomb_limit_is_respected(photo, monkeypatch, recwarn, limit):
    p = photo("small.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DecodeError, match=r"image too large: 100x100 px"):
        open_photo(p)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # limit disabled → decodes
    assert open_photo(p).width == 100


def test_missing_file_vanished(tmp_path):
    with pytest.raises(DecodeError, match="file vanished"):
        open_photo(tmp_path / "nope.jpg")


def test_file_deleted_between_scan_and_decode(tmp_path):
    from imgsearch.indexer.scan import scan

    make_photo(tmp_path / "a.jpg")
    (entry,) = list(scan([tmp_path]))
    os.unlink(entry.path)
    with pytest.raises(DecodeError, match="file vanished"):
        open_photo(entry.path)


def test_folder_and_fifo(tmp_path):
    with pytest.raises(DecodeError, match="is a folder"):
        open_photo(tmp_path)
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this OS")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="not a regular file"):  # and does not hang
        open_photo(fifo)


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop root from reading the file")
def test_unreadable_file(photo):
    p = photo("locked.jpg")
    os.chmod(p, 0)
    try:
        with pytest.raises(DecodeError, match="permission denied"):
            open_photo(p)
    finally:
        os.chmod(p, 0o644)


def test_permission_denied_mapped(photo, monkeypatch):
    """Runs as root too: the OS error is simulated."""
    p = photo("locked.jpg")

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(decode.os, "open", deny)
    with pytest.raises(DecodeError, match="^permission denied$"):
        open_photo(p)


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("boom"), KeyError("x"), ZeroDivisionError()])
def test_unexpected_errors_become_decode_error(photo, monkeypatch, exc):
    p = photo("x.jpg")

    def broken_load(self, *a, **k):
        raise exc

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(DecodeError):
        open_photo(p)


def test_fuzzed_files_only_ever_raise_decode_error(tmp_path):
    rnd = random.Random(1234)
    sources = []
    for ext, kind in ((".jpg", "red_circle"), (".png", "checker"), (".gif", "stripes"),
                      (".webp", "gradient"), (".bmp", "sky"), (".tif", "blue_square")):
        sources.append((ext, make_photo(tmp_path / f"src{ext}", kind, (96, 64)).read_bytes()))
    n_ok = n_err = 0
    for i in range(60):
        ext, data = sources[i % len(sources)]
        b = bytearray(data)
        op = i % 3
        if op == 0:  # truncate
            b = b[: rnd.randrange(1, len(b))]
        elif op == 1:  # flip random bytes (header included)
            for _ in range(rnd.randrange(1, 12)):
                b[rnd.randrange(len(b))] ^= rnd.randrange(1, 256)
        else:  # overwrite a random span with garbage
            s = rnd.randrange(len(b))
            b[s:s + 32] = rnd.randbytes(32)
        p = tmp_path / f"fuzz{i}{ext}"
        p.write_bytes(bytes(b))
        try:
            ph = open_photo(p)
        except DecodeError as e:
            assert e.reason
            n_err += 1
        else:
            assert ph.image.mode == "RGB" and ph.width > 0 and ph.height > 0
            n_ok += 1
    assert n_err > 10


def test_decode_error_pickles():
    e = pickle.loads(pickle.dumps(DecodeError("not an image", "detail")))
    assert isinstance(e, DecodeError) and str(e) == "not an image" and e.detail == "detail"


# ---------------------------------------------------------------- formats and modes


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".JPG", ".Png"])
def test_formats_decode_to_rgb(photo, ext):
    p = photo("pic" + ext, kind="red_circle", size=(320, 240))
    ph = open_photo(p)
    assert isinstance(ph, DecodedPhoto)
    assert ph.image.mode == "RGB"
    assert (ph.width, ph.height) == (320, 240) == ph.image.size
    assert near(ph.image.getpixel((160, 120)), (220, 20, 20))
    assert light(ph.image.getpixel((2, 2)))


def test_unicode_file_name(tmp_path):
    p = make_photo(tmp_path / "café 照片 🐶.jpg", "blue_square", (320, 240))
    ph = open_photo(str(p))
    assert near(ph.image.getpixel((160, 120)), (20, 40, 210))


def test_cmyk_jpeg(photo):
    p = photo("cmyk.jpg", kind="red_circle", size=(320, 240), mode="CMYK")
    with Image.open(p) as raw:
        assert raw.mode == "CMYK"
    ph = open_photo(p)
    assert ph.image.mode == "RGB"
    assert near(ph.image.getpixel((160, 120)), (220, 20, 20), tol=50)
    assert light(ph.image.getpixel((3, 3)))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    np = pytest.importorskip("numpy")
    ramp = np.tile(np.linspace(0, 65535, 300).astype(np.uint16), (200, 1))  # left black → right white
    p = tmp_path / "deep.png"
    Image.fromarray(ramp).save(p)
    with Image.open(p) as raw:
        assert raw.mode.startswith("I")
    ph = open_photo(p)
    w, h = ph.image.size
    left, mid, right = (ph.image.getpixel((x, h // 2)) for x in (2, w // 2, w - 3))
    assert dark(left) and light(right), (left, mid, right)
    assert 80 < mid[0] < 180 and mid[0] == mid[1] == mid[2]


def test_palette_png_with_transparency_goes_on_white(tmp_path):
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0, 200, 0, 0] + [0] * (256 * 3 - 6))  # index 0 black, 1 red
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), fill=1)
    im.info["transparency"] = 0
    p = tmp_path / "pal.png"
    im.save(p, transparency=0)
    ph = open_photo(p)
    assert ph.image.getpixel((2, 2)) == (255, 255, 255)  # transparent black → white, not black
    assert near(ph.image.getpixel((32, 32)), (200, 0, 0), tol=2)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_onto_white(tmp_path, mode):
    im = Image.new(mode, (64, 64), (0, 0) if mode == "LA" else (0, 0, 0, 0))  # transparent black
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), fill=(60, 255) if mode == "LA" else (200, 0, 0, 255))
    p = tmp_path / f"alpha_{mode}.png"
    im.save(p)
    ph = open_photo(p)
    assert ph.image.mode == "RGB"
    assert ph.image.getpixel((2, 2)) == (255, 255, 255)
    assert ph.image.getpixel((32, 32)) == ((60, 60, 60) if mode == "LA" else (200, 0, 0))


def test_one_bit_and_greyscale(photo):
    ph1 = open_photo(photo("bits.png", kind="checker", size=(320, 240), mode="1"))
    seen = {ph1.image.getpixel((x, y)) for x in range(0, 320, 20) for y in range(0, 240, 20)}
    assert seen == {(0, 0, 0), (255, 255, 255)}
    ph2 = open_photo(photo("grey.jpg", kind="red_circle", size=(320, 240), mode="L"))
    r, g, b = ph2.image.getpixel((160, 120))
    assert ph2.image.mode == "RGB" and r == g == b


@pytest.mark.parametrize("ext", [".gif", ".webp"])
def test_animated_first_frame(tmp_path, ext):
    frames = [Image.new("RGB", (80, 60), c) for c in ((220, 20, 20), (20, 40, 210), (20, 170, 40))]
    p = tmp_path / f"anim{ext}"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(p) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    ph = open_photo(p)
    assert near(ph.image.getpixel((40, 30)), (220, 20, 20))


def test_heic(tmp_path):
    if not decode.HEIF_SUPPORTED or not heif_writable():
        pytest.skip("pillow_heif cannot write HEIF here")
    p = make_photo(tmp_path / "phone.HEIC", "marker", (320, 240), exif_orientation=6,
                   taken_at=datetime(2023, 7, 14, 9, 30, 0))
    ph = open_photo(p)
    assert ph.format == "HEIF"
    # libheif applies the rotation itself; it must not be applied twice
    assert (ph.width, ph.height) == (240, 320) == ph.image.size
    assert dark(ph.image.getpixel((235, 5))) and light(ph.image.getpixel((5, 5)))
    assert ph.taken_at == datetime(2023, 7, 14, 9, 30, 0)


def test_heif_missing_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "HEIF_SUPPORTED", False)
    p = tmp_path / "x.heic"
    p.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    with pytest.raises(DecodeError, match="HEIC/HEIF support is not installed"):
        open_photo(p)


# ---------------------------------------------------------------- orientation and size

# where the black top-left marker of the stored image lands after applying each orientation
LANDS = {1: "TL", 2: "TR", 3: "BR", 4: "BL", 5: "TL", 6: "TR", 7: "BR", 8: "BL"}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(photo, orientation):
    p = photo(f"o{orientation}.jpg", kind="marker", size=(640, 480), exif_orientation=orientation)
    ph = open_photo(p)
    rotated = orientation >= 5
    assert (ph.width, ph.height) == ((480, 640) if rotated else (640, 480))
    w, h = ph.image.size
    assert (w < h) == rotated
    corners = {"TL": (4, 4), "TR": (w - 5, 4), "BL": (4, h - 5), "BR": (w - 5, h - 5)}
    for name, xy in corners.items():
        px = ph.image.getpixel(xy)
        assert (dark(px) if name == LANDS[orientation] else light(px)), (orientation, name, px)


def test_orientation_six_on_large_drafted_jpeg(photo):
    p = photo("big.jpg", kind="marker", size=(2000, 1500), exif_orientation=6)
    ph = open_photo(p, target=224)
    assert (ph.width, ph.height) == (1500, 2000)  # original header size, rotated
    w, h = ph.image.size
    assert w < h and 224 <= w < 448  # drafted (1/4 scale: 375x500), then rotated
    assert dark(ph.image.getpixel((w - 5, 4))) and light(ph.image.getpixel((4, 4)))


@pytest.mark.parametrize("ext,size", [(".jpg", (2000, 1500)), (".png", (1200, 900)), (".jpg", (4000, 600))])
def test_large_images_are_reduced(photo, ext, size):
    ph = open_photo(photo("large" + ext, kind="sky", size=size), target=224)
    assert (ph.width, ph.height) == size
    s = min(ph.image.size)
    assert 224 <= s < 448, ph.image.size
    ar_in, ar_out = size[0] / size[1], ph.image.size[0] / ph.image.size[1]
    assert abs(ar_in - ar_out) / ar_in < 0.02
    assert near(ph.image.getpixel((ph.image.size[0] // 2, 5)), (90, 150, 235))


def test_small_image_not_upscaled(photo):
    ph = open_photo(photo("tiny.png", size=(50, 40)), target=224)
    assert ph.image.size == (50, 40) == (ph.width, ph.height)


# ---------------------------------------------------------------- capture time


def test_taken_at_from_exif_ifd(photo):
    ph = open_photo(photo("t.jpg", taken_at=datetime(2019, 5, 4, 13, 2, 1)))
    assert ph.taken_at == datetime(2019, 5, 4, 13, 2, 1)


def test_taken_at_falls_back_to_datetime_tag(tmp_path):
    exif = Image.Exif()
    exif[306] = "2011:02:03 04:05:06"
    p = tmp_path / "dt.jpg"
    Image.new("RGB", (32, 32), "white").save(p, exif=exif.tobytes())
    assert open_photo(p).taken_at == datetime(2011, 2, 3, 4, 5, 6)


def test_original_preferred_over_datetime_and_garbage_tolerated(tmp_path):
    exif = Image.Exif()
    exif[306] = "2011:02:03 04:05:06"
    exif.get_ifd(0x8769)[36867] = "2009:09:09 09:09:09"
    p = tmp_path / "both.jpg"
    Image.new("RGB", (32, 32)).save(p, exif=exif.tobytes())
    assert open_photo(p).taken_at == datetime(2009, 9, 9, 9, 9, 9)

    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "0000:00:00 00:00:00"
    exif[306] = "garbage!"
    exif[0x0112] = 99  # nonsense orientation: ignored
    q = tmp_path / "garbage.jpg"
    Image.new("RGB", (40, 30)).save(q, exif=exif.tobytes())
    ph = open_photo(q)
    assert ph.taken_at is None and (ph.width, ph.height) == (40, 30)


def test_no_exif(photo):
    assert open_photo(photo("plain.png")).taken_at is None


@pytest.mark.parametrize("value,want", [
    ("2021:06:01 12:34:56", datetime(2021, 6, 1, 12, 34, 56)),
    ("2021-06-01 12:34:56\x00", datetime(2021, 6, 1, 12, 34, 56)),
    (b"2021:06:01 12:34:56", datetime(2021, 6, 1, 12, 34, 56)),
    ("2021:06:01 12:34", datetime(2021, 6, 1, 12, 34)),
    ("2021:06:01", datetime(2021, 6, 1)),
    ("2016:12:31 23:59:60", datetime(2016, 12, 31, 23, 59, 59)),
    ("0000:00:00 00:00:00", None),
    ("    :  :     :  :  ", None),
    ("2021:13:45 99:99:99", None),
    ("1200:01:01 00:00:00", None),
    ("", None),
    (None, None),
    (12345, None),
])
def test_parse_exif_datetime(value, want):
    assert parse_exif_datetime(value) == want


def test_parse_exif_datetime_subseconds():
    assert parse_exif_datetime("2021:06:01 12:34:56", "042") == datetime(2021, 6, 1, 12, 34, 56, 42000)
    assert parse_exif_datetime("2021:06:01 12:34:56", "junk") == datetime(2021, 6, 1, 12, 34, 56)


# ---------------------------------------------------------------- model input


@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_to_model_input(photo, mode):
    torch = pytest.importorskip("torch")
    ph = open_photo(photo("m.jpg", kind="red_circle", size=(800, 600)))
    t = to_model_input(ph, 224, mode)
    assert t.shape == (3, 224, 224) and t.dtype == torch.float32
    assert -1.0001 <= float(t.min()) and float(t.max()) <= 1.0001
    # centre is red: R high, G and B low (normalised to [-1, 1])
    assert t[0, 112, 112] > 0.5 and t[1, 112, 112] < -0.5 and t[2, 112, 112] < -0.5
