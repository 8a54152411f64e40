#!/usr/bin/env python
"""OCR engines for "text inside photos": accuracy and speed on a test set this script makes.

Engines (each offline, from a registry package):
  tesseract  Debian's tesseract-ocr 5 + tesseract-ocr-eng (`apt-get install tesseract-ocr tesseract-ocr-eng`),
             the binary run once per photo (stdin → TSV on stdout, --psm 11 "sparse text": photos, not pages;
             words of confidence >= 60 kept; one thread), the photo given at <= 1600 px
  rapidocr   rapidocr-onnxruntime (PP-OCRv4 det + rec ONNX models inside the wheel; nothing downloaded),
             in-process, exactly as the indexer runs it: imgsearch.indexer.ocr.read_text (<= 1280 px, one
             ONNX thread, lines scored >= 0.5, stray marks dropped); `pip install 'imgsearch[ocr]'`
Then the chosen engine on 12-MP JPEGs (4000x3000, q90) as the indexer reads them (indexer.ocr.ocr_file:
draft decode + EXIF + OCR), with and without text: what `index --ocr` adds per photo.

Test set (made here, never shipped):
  * rendered: sentences of common words drawn with Pillow's ImageFont (DejaVu Sans / Bold) on COCO dev
    photos, at text heights 14 / 24 / 40 / 72 px on a 1280-px-wide photo and angles 0 / 8 / 20 / 45 degrees,
    half as white text with a dark outline, half on a sign plate;
  * screenshot: a white page with three lines of 18-px text;
  * real: the COCO dev photos with readable signs (a STOP sign; a HESS price board, partly cropped);
  * negatives: COCO dev photos without text (false words read).
Scores: character accuracy = 1 - edit distance / len(truth) over the lower-cased alphanumeric text
(floored at 0), word recall = share of the truth's words (>= 3 chars) found among the words read.
Times are wall ms per photo on this machine (the photo given at <= 1280 px, as the indexer gives it).

    python bench/ocr_engines.py [--images ../shared/data/coco_dev/images] [--engines tesseract,rapidocr]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"
FONTS = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"]
WORDS = ("open daily coffee bakery station parking museum garden market fresh bread exit north street hotel "
         "pharmacy library school closed welcome river bridge sale books music pizza harbour tickets").split()
REAL = {"000000252332.jpg": "STOP", "000000527220.jpg": "HESS 281 294 306"}
SIZES = (14, 24, 40, 72)
ANGLES = (0, 8, 20, 45)


def norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


def words(s: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if len(w) >= 3}


def edit(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_acc(truth: str, read: str) -> float:
    t, r = norm(truth), norm(read)
    return max(0.0, 1.0 - edit(t, r) / max(1, len(t)))


def word_recall(truth: str, read: str) -> float:
    t = words(truth)
    return len(t & words(read)) / len(t) if t else 1.0


def render(bg: Image.Image, text: str, size: int, angle: int, plate: bool, font_path: str) -> Image.Image:
    im = bg.convert("RGB")
    im = im.resize((1280, round(1280 * im.height / im.width)))
    font = ImageFont.truetype(font_path, size)
    box = ImageDraw.Draw(im).textbbox((0, 0), text, font=font, stroke_width=0 if plate else max(1, size // 12))
    w, h = box[2] - box[0] + size, box[3] - box[1] + size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if plate:
        d.rectangle((0, 0, w - 1, h - 1), fill=(245, 240, 225, 255))
        d.text((size // 2 - box[0], size // 2 - box[1]), text, font=font, fill=(20, 30, 90))
    else:
        d.text((size // 2 - box[0], size // 2 - box[1]), text, font=font, fill="white",
               stroke_width=max(1, size // 12), stroke_fill="black")
    layer = layer.rotate(angle, expand=True, resample=Image.BICUBIC)
    x = max(0, (im.width - layer.width) // 2)
    y = max(0, (im.height - layer.height) // 2)
    im.paste(layer, (x, y), layer)
    return im


def make_set(images: Path, seed: int = 0) -> list[tuple[str, Image.Image, str]]:
    rng = random.Random(seed)
    files = sorted(p for p in images.glob("*.jpg") if p.name not in REAL)
    out = []
    k = 0
    for size in SIZES:
        for angle in ANGLES:
            for plate in (False, True):
                bg = Image.open(files[k % len(files)])
                k += 1
                n = 2 if size >= 72 else 3
                text = " ".join(rng.choice(WORDS) for _ in range(n))
                out.append((f"rendered h{size} a{angle} {'plate' if plate else 'outline'}",
                            render(bg, text, size, angle, plate, FONTS[k % 2]), text))
    page = Image.new("RGB", (1280, 800), "white")
    d = ImageDraw.Draw(page)
    f = ImageFont.truetype(FONTS[0], 18)
    lines = ["Settings  Network  Bluetooth  Display", "Your invoice number 40721 is due on Friday",
             "Receipt total 18.40 paid by card at the bakery"]
    for i, line in enumerate(lines):
        d.text((60, 80 + 40 * i), line, font=f, fill=(30, 30, 30))
    out.append(("screenshot", page, " ".join(lines)))
    for name, truth in REAL.items():
        if (images / name).exists():
            out.append((f"real {name}", Image.open(images / name).convert("RGB"), truth))
    for p in files[k:k + 10]:
        out.append((f"negative {p.name}", Image.open(p).convert("RGB"), ""))
    return out


def tesseract_engine():
    import io
    import shutil
    import subprocess

    exe = shutil.which("tesseract")
    if exe is None:
        raise RuntimeError("tesseract not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")

    def read(image):
        im = image.convert("L")
        if max(im.size) > 1600:
            s = 1600 / max(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)))
        buf = io.BytesIO()
        im.save(buf, format="PPM")
        r = subprocess.run([exe, "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"], input=buf.getvalue(),
                           capture_output=True, timeout=60, env=dict(os.environ, OMP_THREAD_LIMIT="1"))
        out = []
        for row in r.stdout.decode("utf-8", "replace").splitlines()[1:]:
            f = row.split("\t")
            if len(f) >= 12 and f[0] == "5" and float(f[10]) >= 60 and len(re.findall(r"[0-9A-Za-z]", f[11])) >= 2:
                out.append(f[11])
        return " ".join(out)
    return read


def rapidocr_engine():
    from imgsearch.indexer import ocr

    return ocr.read_text


def camera_photos(images: Path, folder: Path) -> list[tuple[str, Path]]:
    """12-MP JPEGs as a phone writes them: one COCO photo upscaled, with and without a sign."""
    files = sorted(images.glob("*.jpg"))
    out = []
    for k, with_text in enumerate((True, False, True, False)):
        bg = Image.open(files[k]).convert("RGB").resize((4000, 3000), Image.BICUBIC)
        if with_text:
            small = render(bg, "fresh bread daily", 60, 5 * k, True, FONTS[1]).resize((4000, 3000), Image.BICUBIC)
            bg = small
        p = folder / f"cam{k}.jpg"
        bg.save(p, quality=90)
        out.append(("text" if with_text else "no text", p))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", default=str(ROOT.parent / "shared/data/coco_dev/images"))
    ap.add_argument("--engines", default="tesseract,rapidocr")
    ap.add_argument("--out", default=str(RESULTS / "ocr_engines.txt"))
    a = ap.parse_args()
    data = make_set(Path(a.images))
    lines = [f"# bench/ocr_engines.py  {time.strftime('%Y-%m-%d')}  {platform.platform()}  cores={os.cpu_count()}"
             f"  load={os.getloadavg()[0]:.1f}",
             f"# {len(data)} photos: {sum(n.startswith('rendered') for n, _, _ in data)} rendered (heights {SIZES} px"
             f" on 1280 px, angles {ANGLES} deg), 1 screenshot, {sum(n.startswith('real') for n, _, _ in data)} real"
             f" signs, {sum(n.startswith('negative') for n, _, _ in data)} negatives"]
    summary = []
    for name in a.engines.split(","):
        try:
            read = {"tesseract": tesseract_engine, "rapidocr": rapidocr_engine}[name]()
            read(data[0][1])  # warm up (model load)
        except Exception as e:  # noqa: BLE001 - an engine that is not installed is reported, not fatal
            lines.append(f"{name}: not available ({type(e).__name__}: {e})")
            continue
        rows, groups = [], {}
        for label, im, truth in data:
            t0 = time.perf_counter()
            got = read(im)
            ms = (time.perf_counter() - t0) * 1000
            ca, wr = (char_acc(truth, got), word_recall(truth, got)) if truth else (float("nan"), float("nan"))
            false_words = len(words(got)) if not truth else 0
            key = label.split()[0] if not label.startswith("rendered") else f"rendered {label.split()[1]}"
            groups.setdefault(key, []).append((ca, wr, ms, false_words))
            if label.startswith("rendered"):
                groups.setdefault(f"rendered {label.split()[2]}", []).append((ca, wr, ms, false_words))
            rows.append(f"  {name:9s} {label:34s} ms={ms:7.1f} char={ca:5.2f} words={wr:5.2f} read={got[:60]!r}")
        lines.append(f"\n## {name}")
        for key in sorted(groups):
            g = groups[key]
            pos = [x for x in g if not math.isnan(x[0])]
            ms = sorted(x[2] for x in g)[len(g) // 2]
            if pos:
                lines.append(f"{name:9s} {key:18s} n={len(g):2d} char_acc={sum(x[0] for x in pos) / len(pos):.2f} "
                             f"word_recall={sum(x[1] for x in pos) / len(pos):.2f} ms/photo(median)={ms:.0f}")
            else:
                lines.append(f"{name:9s} {key:18s} n={len(g):2d} false words read={sum(x[3] for x in g)} "
                             f"ms/photo(median)={ms:.0f}")
        pos = [x for g in ("rendered", "screenshot", "real") for k, v in groups.items()
               if k.split()[0] == g and (g != "rendered" or k.split()[1].startswith("h")) for x in v]
        allms = sorted(x[2] for v in groups.values() for x in v)
        summary.append(f"{name:9s} ALL text photos n={len(pos)} char_acc={sum(x[0] for x in pos) / len(pos):.2f} "
                       f"word_recall={sum(x[1] for x in pos) / len(pos):.2f} ms/photo median={allms[len(allms) // 2]:.0f}"
                       f" mean={sum(allms) / len(allms):.0f}")
        lines += rows
    if "rapidocr" in a.engines.split(","):
        import tempfile

        from imgsearch.indexer import ocr

        with tempfile.TemporaryDirectory() as tmp:
            cams = camera_photos(Path(a.images), Path(tmp))
            ocr.ocr_file(str(cams[0][1]))
            for kind in ("text", "no text"):
                ms = []
                for k2, p in cams:
                    if k2 == kind:
                        t0 = time.perf_counter()
                        got = ocr.ocr_file(str(p))
                        ms.append((time.perf_counter() - t0) * 1000)
                summary.append(f"rapidocr  12-MP JPEG, {kind:7s}: ocr_file (draft decode + OCR) "
                               f"{sum(ms) / len(ms):.0f} ms/photo (n={len(ms)}), read e.g. {got[:40]!r}")
    lines = lines[:2] + ["", "## summary"] + summary + lines[2:]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
