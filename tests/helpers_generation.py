"""Models and files for the generation-feature tests (samplers, inpainting, LoRA)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdtui.client import decode_png


def write_tiny_inpainting_model(out: Path, seed: int = 7) -> Path:
    """The tiny SD 1.x model with an inpainting checkpoint's 9-channel UNet, as a diffusers
    folder (sdtui.devtools' `--inpainting`)."""
    from sdtui.devtools.tiny_model import write_tiny_model

    return write_tiny_model(out, "diffusers", seed, inpainting=True)


def b64_png(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def pixels(event: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(decode_png(event))).convert("RGB"), dtype=int)


def images_of(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "image"]


def reference_pipe(folder: Path, kind: str, **components: object) -> Any:
    """diffusers' own pipeline `kind` over a diffusers folder, its weights in their own aligned
    memory as the worker's are (sdtui.worker.models.align_weights: CPU kernels round
    differently on unaligned weights, and a folder's tensors are views into its files)."""
    import diffusers

    from sdtui.worker.models import align_weights

    pipe = getattr(diffusers, kind).from_pretrained(folder, local_files_only=True, **components)
    align_weights(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_same(ours: dict, ref: np.ndarray) -> None:
    """The worker's image event has exactly a reference pipeline's pixels."""
    got = pixels(ours)
    assert got.shape == ref.shape, f"sdtui drew {got.shape}, diffusers {ref.shape}"
    assert np.array_equal(got, ref), f"pixels differ by up to {np.abs(got - ref).max()}"


# A flat red init image and a mask that repaints its centre square only.
SIZE = 64
INIT = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (16, 16, 48, 48))
# The guide's -M kind of mask: the same square, transparent where it repaints.
TRANSPARENT_MASK = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
TRANSPARENT_MASK.paste((0, 0, 0, 0), (16, 16, 48, 48))
