"""Files the user hands to a generation, read the same way by both front ends."""

from __future__ import annotations

import base64
from pathlib import Path

from sdtui.errors import BadInput
from sdtui.protocol import MAX_INIT_IMAGE_BYTES
from sdtui.userfiles import expand, read_bytes, read_text

# Real prompt files are kilobytes; this only keeps a wrong path from filling the memory.
MAX_PROMPT_FILE_BYTES = 16 * 1024 * 1024


def _read_image(path: Path, what: str) -> str:
    data = read_bytes(expand(path, what), what, MAX_INIT_IMAGE_BYTES,
                      too_large="pass a smaller PNG or JPEG")
    return base64.b64encode(data).decode("ascii")


def prompts_of(text: str, source: str) -> list[str]:
    """A prompt file's prompts: one per line; blank lines and lines starting with # skipped."""
    lines = (ln.strip() for ln in text.splitlines())
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise BadInput(f"prompt file {source} has no prompts", fix="write one prompt per line")
    return prompts


def read_prompt_file(path: Path) -> list[str]:
    text = read_text(expand(path, "prompt file"), "prompt file", MAX_PROMPT_FILE_BYTES)
    return prompts_of(text, str(path))


def read_init_image(path: Path) -> str:
    """An img2img init image as the protocol carries it (base64); the worker checks the bytes."""
    return _read_image(path, "init image")


def read_mask(path: Path) -> str:
    """An inpainting mask, carried like the init image."""
    return _read_image(path, "mask")
