"""Which textual-image renderer shows images: Kitty or Sixel where the terminal supports them,
half-cell blocks elsewhere; SDTUI_IMAGE_PROTOCOL forces one."""

from __future__ import annotations

import os

from textual_image import widget as image_widgets  # probes the terminal: before the app runs

from sdtui.errors import BadInput

ENV_VAR = "SDTUI_IMAGE_PROTOCOL"
PROTOCOLS = {
    "auto": image_widgets.Image,
    "kitty": image_widgets.TGPImage,
    "sixel": image_widgets.SixelImage,
    "halfcell": image_widgets.HalfcellImage,
    "unicode": image_widgets.UnicodeImage,
}


def image_protocol(value: str | None = None) -> str:
    name = (value if value is not None else os.environ.get(ENV_VAR, "")).strip().lower() or "auto"
    if name not in PROTOCOLS:
        raise BadInput(f"{ENV_VAR}={name!r} is not an image protocol",
                       fix=f"use one of {', '.join(PROTOCOLS)}")
    return name


def image_widget_class(protocol: str) -> type:
    return PROTOCOLS[image_protocol(protocol)]
