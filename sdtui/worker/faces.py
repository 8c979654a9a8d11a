"""Face restoration with GFPGAN: find faces with no network, restore each, paste it back.

Faces are found with OpenCV's frontal-face Haar cascade, which ships inside the opencv wheel.
Each face is cropped as a square around the detection with margin, restored at GFPGAN's
512x512, and pasted back through a feathered mask; strength blends restored with original.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

GFPGAN_SIZE = 512
# GFPGAN was trained on crops where the face fills about half the width.
CROP_MARGIN = 1.8
MIN_FACE_FRACTION = 0.08

Box = tuple[int, int, int, int]


def detect_faces(image: Image.Image) -> list[Box]:
    """Boxes (x, y, w, h) of frontal faces, largest first."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(min(gray.shape) * MIN_FACE_FRACTION))
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=6,
                                     minSize=(min_side, min_side))
    boxes = [tuple(int(v) for v in box) for box in found]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)  # type: ignore[return-value]


def _crop_box(box: Box, size: tuple[int, int]) -> Box:
    x, y, w, h = box
    side = int(max(w, h) * CROP_MARGIN)
    side = min(side, *size)
    cx, cy = x + w // 2, y + h // 2
    left = min(max(cx - side // 2, 0), size[0] - side)
    top = min(max(cy - side // 2, 0), size[1] - side)
    return left, top, side, side


def _soft_mask(side: int) -> Image.Image:
    """An ellipse that fades out towards the crop's edges, so no seam shows."""
    mask = Image.new("L", (side, side), 0)
    inset = side // 8
    ImageDraw.Draw(mask).ellipse((inset, inset, side - inset, side - inset), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(side / 16))


def _run_gfpgan(model: Any, face: Image.Image) -> Image.Image:
    net = model.model
    param = next(net.parameters())
    x = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    x = x.to(param.device, param.dtype) * 2 - 1  # GFPGAN works in [-1, 1]
    with torch.inference_mode():
        # The StyleGAN decoder's fixed noise buffers, not fresh noise: reruns give equal pixels.
        out = net(x, return_rgb=False, randomize_noise=False)[0]
    out = ((out.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(out[0].permute(1, 2, 0).cpu().numpy())


def restore_faces(image: Image.Image, model: Any, strength: float) -> tuple[Image.Image, int]:
    """The image with every detected face restored, and how many faces there were."""
    image = image.convert("RGB")
    boxes = detect_faces(image)
    result = image.copy()
    for box in boxes:
        left, top, side, _ = _crop_box(box, image.size)
        region = (left, top, left + side, top + side)
        crop = image.crop(region)
        restored = _run_gfpgan(model, crop.resize((GFPGAN_SIZE, GFPGAN_SIZE), Image.LANCZOS))
        restored = restored.resize((side, side), Image.LANCZOS)
        blended = Image.blend(crop, restored, strength)
        result.paste(blended, region[:2], _soft_mask(side))
    return result, len(boxes)
