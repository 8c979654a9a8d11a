"""A small picture of an image file in half blocks (each cell: two pixels, the top one in the
foreground of "▀", the bottom one in its background), which every terminal shows. UI-free:
it returns rich Text; a file that is not a readable image gives None."""

from __future__ import annotations

from pathlib import Path

from rich.color import Color
from rich.style import Style
from rich.text import Text

from sdtui.protocol import MAX_INIT_IMAGE_BYTES


def half_blocks(path: Path, columns: int = 16, rows: int = 8) -> Text | None:
    """At most `columns` × `rows` cells; a file over the worker's input limit is not opened."""
    from PIL import Image

    try:
        if not path.is_file() or path.stat().st_size > MAX_INIT_IMAGE_BYTES:
            return None
        with Image.open(path) as image:
            image.draft("RGB", (columns * 4, rows * 8))  # JPEG: decode at a fraction
            small = image.convert("RGB")
            small.thumbnail((columns, rows * 2))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    pixels, (width, height) = small.load(), small.size
    text = Text()
    for y in range(0, height, 2):
        for x in range(width):
            below = Color.from_rgb(*pixels[x, y + 1]) if y + 1 < height else None
            text.append("▀", Style(color=Color.from_rgb(*pixels[x, y]), bgcolor=below))
        text.append("\n")
    return text
