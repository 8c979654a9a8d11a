"""Real-ESRGAN upscaling in tiles, so memory is bounded by the tile, not the image.

Each tile is run with an overlap of context on every side and only its centre is kept, so the
seams of the tiling do not show. Strength blends the result with a plain Lanczos resize.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

TILE = 192
OVERLAP = 16


def _to_tensor(image: Image.Image, like: torch.Tensor) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(like.device, like.dtype)


def _run(net: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x).float().clamp(0, 1).cpu()


def upscale_tensor(model: Any, x: torch.Tensor, tile: int | None = TILE,
                   overlap: int = OVERLAP) -> torch.Tensor:
    """Upscale a 1x3xHxW tensor in [0, 1]; tile=None runs the whole image at once."""
    scale = model.scale
    _, _, height, width = x.shape
    if tile is None or (height <= tile and width <= tile):
        return _run(model.model, x)
    out = torch.empty(1, 3, height * scale, width * scale)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            # The tile with context around it; an even size keeps the ×2 model's unshuffle exact.
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            b0, r0 = min(bottom + overlap, height), min(right + overlap, width)
            t0 -= (b0 - t0) % 2
            l0 -= (r0 - l0) % 2
            t0, l0 = max(t0, 0), max(l0, 0)
            piece = _run(model.model, x[:, :, t0:b0, l0:r0])
            dy, dx = (top - t0) * scale, (left - l0) * scale
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = piece[
                :, :, dy:dy + (bottom - top) * scale, dx:dx + (right - left) * scale
            ]
    return out


def upscale(image: Image.Image, model: Any, strength: float,
            tile: int | None = TILE) -> Image.Image:
    """The image `model.scale` times larger; strength 0 is a plain resize, 1 pure Real-ESRGAN."""
    image = image.convert("RGB")
    size = (image.width * model.scale, image.height * model.scale)
    plain = image.resize(size, Image.LANCZOS)
    if strength <= 0:
        return plain
    param = next(model.model.parameters())
    out = upscale_tensor(model, _to_tensor(image, param), tile)
    pixels = (out[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.blend(plain, Image.fromarray(pixels), strength)
