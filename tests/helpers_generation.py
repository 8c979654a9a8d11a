"""Models and files for the generation-feature tests (samplers, inpainting, LoRA)."""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator
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


@contextlib.contextmanager
def running_workers(folders: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """A real worker process for each model folder, ready, stopped after."""
    from tests.test_worker import WorkerProcess

    started = {name: WorkerProcess(path) for name, path in folders.items()}
    try:
        for worker in started.values():
            worker.client.wait_ready(timeout=300)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def reference_pipeline(folder: Path, kind: str, **components: object) -> Any:
    """diffusers' own pipeline `kind` on a folder, its weights aligned as the worker's are
    (sdtui.worker.aligned.align_weights): CPU kernels round differently on unaligned weights,
    and a diffusers folder's tensors are views at whatever offset each sits in its file."""
    import diffusers

    from sdtui.worker.aligned import align_weights

    pipe = getattr(diffusers, kind).from_pretrained(folder, local_files_only=True, **components)
    align_weights(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_pixels(pipe: Any, prompt: str, seed: int, **kwargs: Any) -> np.ndarray:
    import torch

    out = pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed),
               **kwargs).images[0]
    return np.asarray(out.convert("RGB"), dtype=int)


def assert_same(ours: dict, ref: np.ndarray) -> None:
    """The worker's image event has exactly a reference pipeline's pixels."""
    got = pixels(ours)
    assert got.shape == ref.shape, f"sdtui drew {got.shape}, diffusers {ref.shape}"
    assert np.array_equal(got, ref), f"pixels differ by up to {np.abs(got - ref).max()}"


def one_image(worker: Any, prompt: str, **params: Any) -> dict:
    """The one image a request for Euler at SIZE², no previews, gives."""
    (image,) = images_of(list(worker.client.generate(
        prompt=prompt, **{"width": SIZE, "height": SIZE, "scheduler": "euler",
                          "preview_every": 0, **params})))
    return image


# A flat red init image and a mask that repaints its centre square only.
SIZE = 64
INIT = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (16, 16, 48, 48))
# The guide's -M kind of mask: the same square, transparent where it repaints.
TRANSPARENT_MASK = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
TRANSPARENT_MASK.paste((0, 0, 0, 0), (16, 16, 48, 48))
