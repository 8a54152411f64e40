"""Drawn scenes with known contents: a coloured shape on a plain background."""
from __future__ import annotations

import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square", "triangle")


def draw(colour: str, shape: str, rng: random.Random, size: int = 224) -> Image.Image:
    img = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(img)
    r = rng.randint(45, 80)
    cx, cy = rng.randint(r + 5, size - r - 5), rng.randint(r + 5, size - r - 5)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        d.rectangle(box, fill=COLOURS[colour])
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
    return img
