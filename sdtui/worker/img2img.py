"""The init image of img2img: decoded from the request and fitted to the requested size."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageOps

from sdtui.errors import BadInput


class InitImageInvalid(BadInput, ValueError):
    pass


def open_image(data_b64: str) -> Image.Image:
    """A request's image, decoded and turned upright, in its own mode."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data_b64)))
        image.load()
    except Exception as exc:
        raise InitImageInvalid(f"init_image cannot be decoded ({type(exc).__name__}); send a "
                               "complete PNG or JPEG file") from None
    return ImageOps.exif_transpose(image)


def decode_init_image(data_b64: str) -> Image.Image:
    return open_image(data_b64).convert("RGB")


def fit_image(image: Image.Image, width: int, height: int, fit: str) -> Image.Image:
    """`resize` stretches to the size; `crop` scales to cover it and cuts the centre."""
    if fit == "crop":
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    return image.resize((width, height), Image.LANCZOS)
