"""A grid PNG of a batch (the guide's -g): the images in rows, saved beside them."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image


def make_grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    if not images:
        raise ValueError("a grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    grid = Image.new("RGB", (columns * width, rows * height), "black")
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    return grid


def save_grid(paths: list[Path]) -> Path:
    """Write `<first image's name>-grid.png` beside the images and return its path."""
    images = [Image.open(p) for p in paths]
    out = paths[0].with_name(paths[0].stem + "-grid.png")
    make_grid(images).save(out)
    return out
