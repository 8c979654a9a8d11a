"""Inpainting (the guide's -M): repaint the masked part of the init image.

One diffusers pipeline serves both kinds of checkpoint. With an inpainting checkpoint (a UNet
with 9 input channels: latents, mask, masked-image latents) StableDiffusionInpaintPipeline runs
the inpainting model; with a plain checkpoint (4 channels) the same pipeline runs img2img and
puts the init image's latents back outside the mask after every step, which is the standard
img2img-with-mask behaviour diffusers offers. Either way the pixels outside the mask are the
init image's own afterwards, as A1111 pastes the original back over the unmasked area.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from sdtui.errors import BadInput
from sdtui.worker.img2img import decode_init_image, fit_image, open_image


class MaskInvalid(BadInput):
    pass


def decode_mask(data_b64: str, width: int, height: int, fit: str) -> Image.Image:
    """The mask as 8-bit grey, fitted like the init image: white repaints, black keeps. A mask
    with transparency (the guide's -M) repaints where it is transparent."""
    try:
        image = open_image(data_b64)
    except ValueError as exc:
        raise MaskInvalid(str(exc).replace("init_image", "mask")) from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            mask = alpha.point(lambda a: 255 - a)
            return fit_image(mask, width, height, fit)
    return fit_image(image.convert("L"), width, height, fit)


def load_inputs(req: dict[str, Any]) -> tuple[Image.Image, Image.Image]:
    init = fit_image(decode_init_image(req["init_image"]), req["width"], req["height"], req["fit"])
    return init, decode_mask(req["mask"], req["width"], req["height"], req["fit"])


def paste_back(generated: Image.Image, init: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels where the mask is white, the init image's where it is black."""
    return Image.composite(generated.convert("RGB"), init, mask)
