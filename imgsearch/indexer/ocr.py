"""Text inside photos (OCR): rapidocr-onnxruntime (PP-OCRv4 text detection + recognition, ONNX models
inside the wheel: nothing is downloaded at run time), an optional dependency: ``pip install 'imgsearch[ocr]'``.

Chosen by ``bench/ocr_engines.py`` (``bench/results/ocr_engines.txt``) over Debian's tesseract 5: on 35
photos with text (rendered at 14-72 px and 0-45 degrees on COCO photos, a screenshot, two real signs) it
found 91 % of the words against tesseract's 15 % (tesseract reads pages, not signs on photos: it read
neither real sign and nothing turned 20 degrees or more), at 1.1 s a photo with text against 0.44 s, and
0.16 s for a photo without text (the detector finds nothing; recognition does not run).

That cost is far above the ~45 ms a photo everything else takes (index_throughput: >= 15 photos/s), so OCR is
opt-in: ``imgsearch index --ocr`` (``Library.index(ocr=True)``), remembered by the library. It runs in the
decode workers, on the photo decoded again at :data:`OCR_SIDE` px (a 12-MP JPEG's draft), one ONNX thread
each.
"""
from __future__ import annotations

import importlib.util
import re

from imgsearch.errors import UserError

#: Stored with each photo's text (photos.ocr_version): a change here re-reads every photo on the next
#: ``index --ocr`` run.
OCR_VERSION = "rapidocr-1.4-ppocrv4-1280-s50"
#: The long side the photo is read at (px).
OCR_SIDE = 1280
#: Recognised lines scored lower (0-1) are dropped.
MIN_SCORE = 0.5
INSTALL_HINT = "OCR needs rapidocr-onnxruntime: pip install 'imgsearch[ocr]'"

_WORD = re.compile(r"[0-9A-Za-z\u00c0-\u024f]")
_engine = None   # one RapidOCR per process (the decode workers each load their own: ~0.3 s)


class OcrUnavailable(UserError):
    """The OCR engine is not installed (the message says how to install it, in one line)."""


def missing() -> str | None:
    """Why OCR cannot run here (one line), or None. Imports the engine (opencv: ~0.3 s) when it is installed:
    opencv-python needs the system's libGL (Debian: libgl1), which a bare machine may lack."""
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        return INSTALL_HINT
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError as e:
        hint = " (Debian: apt-get install -y libgl1)" if "libGL" in str(e) else ""
        return f"OCR cannot load rapidocr-onnxruntime: {str(e).splitlines()[0] if str(e) else type(e).__name__}{hint}"
    return None


def available() -> bool:
    return missing() is None


def require() -> None:
    """Raise :class:`OcrUnavailable` (a UserError: one line) when OCR cannot run here."""
    why = missing()
    if why is not None:
        raise OcrUnavailable(why)


def engine():
    global _engine
    if _engine is None:
        require()
        import logging

        from rapidocr_onnxruntime import RapidOCR

        _engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
        for name in ("RapidOCR", "rapidocr_onnxruntime"):   # it logs every call at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
    return _engine


def clean(line: str) -> str:
    """A recognised line without its stray marks: words keep at least 2 letters or digits, or one digit."""
    return " ".join(w for w in line.split() if len(_WORD.findall(w)) >= 2 or w.isdigit())


def read_text(image) -> str:
    """The text read in a PIL image (any mode): one line per text line found, top to bottom; '' when there
    is none. Raises OcrUnavailable when the engine is not installed."""
    import numpy as np

    im = image.convert("RGB")
    if max(im.size) > OCR_SIDE:
        s = OCR_SIDE / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
    result, _ = engine()(np.ascontiguousarray(np.asarray(im)[:, :, ::-1]))
    lines = [clean(str(text)) for _, text, score in (result or []) if float(score) >= MIN_SCORE]
    return "\n".join(line for line in lines if line)


def ocr_file(path: str) -> str:
    """Read the text in the photo at ``path`` (EXIF-rotated, decoded at about OCR_SIDE px)."""
    from imgsearch.indexer.decode import open_photo

    photo = open_photo(path, target=OCR_SIDE * 5 // 8)   # short side; read_text scales to OCR_SIDE
    return read_text(photo.image)
