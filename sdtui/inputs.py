"""Files the user hands to a generation, read the same way by both front ends."""

from __future__ import annotations

import base64
from pathlib import Path

from sdtui.config import load_config
from sdtui.errors import BadInput
from sdtui.paths import default_outputs_dir
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


def outputs_folder(out: Path | None) -> Path:
    """Where images are saved (`--out`, else the config's, else the default): a folder, or a
    path one can be made at. Checked before anything is created, so no image is generated only
    to find it has nowhere to go."""
    folder = out or load_config().generate.out_dir or default_outputs_dir()
    blocking = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        what = "is a file" if blocking == folder else f"cannot be made: {blocking} is a file"
        raise BadInput(f"the outputs folder {folder} {what}",
                       fix="pass --out a folder (it is made if it does not exist)")
    return folder
