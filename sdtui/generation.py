"""A generation request as typed settings, and how it is filled in.

    flags or the prompt form  >  a saved image's recorded request (--from-png, a re-run)
                              >  the form's last values (the app)  >  [generate] in the config
                              >  the protocol's defaults

Both front ends build a `GenerateSettings` with `resolve_generate` and send `request_params`
of it; the protocol checks every value before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdtui import protocol
from sdtui.config import Config, load_config
from sdtui.errors import BadSetting
from sdtui.settings import check_keys, field_names, resolve


def _default(name: str) -> Any:
    return protocol.GENERATE_FIELDS[name].default


@dataclass(frozen=True)
class GenerateSettings:
    prompt: str = ""
    negative_prompt: str = _default("negative_prompt")
    steps: int | None = _default("steps")  # None: the model's (30; FLUX.1 [schnell] 4)
    cfg: float | None = _default("cfg")  # None: the model's (7.5; FLUX.2 [klein] base 4)
    guidance: float | None = _default("guidance")  # FLUX.1 [dev]; None: the model's (3.5)
    width: int | None = _default("width")  # None: the model's own size (1024 for SDXL)
    height: int | None = _default("height")
    seed: int | None = None  # None: the worker picks one
    scheduler: str | None = _default("scheduler")  # None: the model's (Euler a; FLUX.1 Euler)
    schedule: str = _default("schedule")
    count: int = _default("count")
    preview_every: int = _default("preview_every")
    # img2img: a PNG or JPEG file, or (a recorded request's) the image itself as base64.
    init_image: Path | None = None
    init_image_data: str | None = None
    # inpainting: which part of the init image to repaint, a file or the image as base64.
    mask: Path | None = None
    mask_data: str | None = None
    strength: float = _default("strength")
    fit: str = _default("fit")
    gfpgan: float = _default("gfpgan")
    upscale: int | None = None
    upscale_strength: float = _default("upscale_strength")
    variation_amount: float = _default("variation_amount")
    variation_seed: int | None = None
    grid: bool = _default("grid")

    def with_prompt(self, prompt: str) -> GenerateSettings:
        return replace(self, prompt=prompt)


# Settings fields that are not request fields of the same name.
_NOT_SENT = ("init_image", "init_image_data", "mask", "mask_data")


def recorded_layer(params: Mapping[str, Any]) -> dict[str, Any]:
    """A saved image's recorded request (its PNG metadata or index line) as a settings layer:
    one image exactly like it."""
    layer = {k: v for k, v in params.items() if k in field_names(GenerateSettings)
             and k not in _NOT_SENT}
    if params.get("init_image"):
        layer["init_image_data"] = params["init_image"]
    if params.get("mask"):
        layer["mask_data"] = params["mask"]
    layer["count"] = 1
    return layer


def resolve_generate(given: Mapping[str, Any], *, recorded: Mapping[str, Any] | None = None,
                     remembered: Mapping[str, Any] | None = None,
                     config: Config | None = None) -> GenerateSettings:
    check_keys(GenerateSettings, given, "given generation settings")
    config = config or load_config()
    known = field_names(GenerateSettings)
    layers = [given, recorded_layer(recorded) if recorded else {},
              {k: v for k, v in (remembered or {}).items() if k in known},
              config.given("generate")]
    return resolve(GenerateSettings, layers)


def init_image_data(settings: GenerateSettings) -> str | None:
    """The init image as the request carries it; a file is read here (once per batch)."""
    if settings.init_image is not None:
        from sdtui.inputs import read_init_image

        return read_init_image(settings.init_image)
    return settings.init_image_data


def mask_data(settings: GenerateSettings) -> str | None:
    """The inpainting mask as the request carries it, read like the init image."""
    if settings.mask is not None:
        from sdtui.inputs import read_mask

        return read_mask(settings.mask)
    return settings.mask_data


def setting_of(message: str) -> str:
    """The request field a protocol error is about: the one it starts with ('steps must be
    from 1 to 150, got 0'), else the last one it names ('... drop init_image or set
    variation_amount to 0'), else the prompt."""
    words = re.findall(r"[a-z_]+", message.removeprefix("generate: "))
    if words and words[0] in protocol.GENERATE_FIELDS:
        return words[0]
    named = [w for w in words if w in protocol.GENERATE_FIELDS and w != "id"]
    return named[-1] if named else "prompt"


def request_params(settings: GenerateSettings, init_image: str | None = None,
                   mask: str | None = None) -> dict[str, Any]:
    """The request's parameters, checked by the protocol itself (BadSetting names the field).
    `init_image` and `mask` are the images already read (see init_image_data, mask_data); by
    default they are read here."""
    params = {k: getattr(settings, k) for k in field_names(GenerateSettings)
              if k not in _NOT_SENT}
    params["init_image"] = init_image if init_image is not None else init_image_data(settings)
    params["mask"] = mask if mask is not None else mask_data(settings)
    try:
        checked = protocol.request("generate", id="check", **params)
    except protocol.ProtocolError as exc:
        message = str(exc).removeprefix("generate: ")
        name = setting_of(message)
        if name == "init_image" and settings.init_image is not None:
            message = message.replace("init_image", settings.init_image.name, 1)
        if name == "mask" and settings.mask is not None:
            message = message.replace("mask", f"mask {settings.mask.name}", 1)
        raise BadSetting(name, message, fix="see sdtui --help for valid values") from None
    return {k: v for k, v in checked.items() if k not in ("type", "id")}
