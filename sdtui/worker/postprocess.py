"""After the decode: GFPGAN face restoration, then Real-ESRGAN upscaling.

The weights sit next to the model (the worker gets `--model /data/sd-v1-4.ckpt`, so they are
looked for in /data) and are loaded on first use, once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from sdtui.worker.restorers import ESRGAN_FILES, GFPGAN_FILE, load_restorer

Note = Callable[[str], None]


class PostProcessor:
    def __init__(self, model_path: str, device: str = "cpu") -> None:
        path = Path(model_path)
        # A diffusers folder or a checkpoint file: either way its parent is /data.
        self.weights_dir = path.parent
        self.device = device
        self._loaded: dict[str, Any] = {}

    def _model(self, file_name: str, kind: str) -> Any:
        if file_name not in self._loaded:
            model = load_restorer(self.weights_dir / file_name, kind)
            self._loaded[file_name] = model.to(self.device)
        return self._loaded[file_name]

    def check(self, req: dict[str, Any]) -> None:
        """Load the weights a request needs before any sampling, so a missing file fails fast."""
        if req["gfpgan"] > 0:
            self._model(GFPGAN_FILE, "GFPGAN")
        if req["upscale"]:
            self._model(ESRGAN_FILES[req["upscale"]], "ESRGAN")

    def apply(self, image: Image.Image, req: dict[str, Any], note: Note) -> Image.Image:
        if req["gfpgan"] > 0:
            from sdtui.worker.faces import restore_faces

            image, faces = restore_faces(image, self._model(GFPGAN_FILE, "GFPGAN"), req["gfpgan"])
            if not faces:
                note("face restoration: no face found; the image is unchanged")
        if req["upscale"]:
            from sdtui.worker.upscale import upscale

            model = self._model(ESRGAN_FILES[req["upscale"]], "ESRGAN")
            image = upscale(image, model, req["upscale_strength"])
        return image
