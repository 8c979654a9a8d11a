"""A1111's txt2img/img2img request bodies as sdtui generation requests.

The request shapes are A1111's own (AUTOMATIC1111/stable-diffusion-webui,
`modules/api/models.py`: StableDiffusionTxt2ImgProcessingAPI and ...Img2Img..., built from the
processing classes' defaults in `modules/processing.py`). Each field has one behaviour:

- MAPPED: honoured, as the sdtui request field it becomes;
- REFUSED: a value other than its neutral one is answered 422 naming the field (it would change
  the picture in a way sdtui cannot reproduce);
- IGNORED: a value other than its neutral one is ignored and named in `info`'s warnings.

A field at its neutral value (A1111's default, or null) asks for nothing and is never named.
A field A1111 does not have is ignored with a warning, as FastAPI ignores it for A1111.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdtui import samplers
from sdtui.errors import BadSetting
from sdtui.generation import request_params, resolve_generate

MAPPED, REFUSED, IGNORED = "mapped", "refused", "ignored"


@dataclass(frozen=True)
class Rule:
    policy: str
    default: Any  # A1111's default: echoed in `parameters` when the request leaves it out
    why: str = ""
    # Values that ask for nothing (besides the default and null).
    neutral: tuple[Any, ...] = ()


_COMMON: dict[str, Rule] = {
    "prompt": Rule(MAPPED, ""),
    "negative_prompt": Rule(MAPPED, ""),
    "styles": Rule(REFUSED, None, "prompt styles live in A1111's styles.csv", ([],)),
    "seed": Rule(MAPPED, -1),
    "subseed": Rule(MAPPED, -1),
    "subseed_strength": Rule(MAPPED, 0),
    "seed_resize_from_h": Rule(REFUSED, -1, "sdtui cannot resize a seed's noise", (0,)),
    "seed_resize_from_w": Rule(REFUSED, -1, "sdtui cannot resize a seed's noise", (0,)),
    "sampler_name": Rule(MAPPED, None),
    "sampler_index": Rule(MAPPED, "Euler"),
    "scheduler": Rule(MAPPED, None),
    "batch_size": Rule(MAPPED, 1),
    "n_iter": Rule(MAPPED, 1),
    "steps": Rule(MAPPED, 50),
    "cfg_scale": Rule(MAPPED, None),  # left out: the model's own, echoed as it ran
    "width": Rule(MAPPED, 512),
    "height": Rule(MAPPED, 512),
    "restore_faces": Rule(MAPPED, None, "", (False,)),
    "tiling": Rule(REFUSED, None, "sdtui has no tiling", (False,)),
    "do_not_save_samples": Rule(IGNORED, False, "sdtui saves every image to the outputs"),
    "do_not_save_grid": Rule(IGNORED, False, "sdtui makes no grid for the API"),
    "eta": Rule(IGNORED, None, "sdtui's samplers use their own eta"),
    "s_min_uncond": Rule(IGNORED, None, "no such sampler option in sdtui", (0, 0.0)),
    "s_churn": Rule(IGNORED, None, "no such sampler option in sdtui", (0, 0.0)),
    "s_tmax": Rule(IGNORED, None, "no such sampler option in sdtui", (0, 0.0)),
    "s_tmin": Rule(IGNORED, None, "no such sampler option in sdtui", (0, 0.0)),
    "s_noise": Rule(IGNORED, None, "no such sampler option in sdtui", (1, 1.0)),
    "override_settings": Rule(MAPPED, None, "", ({},)),
    "override_settings_restore_afterwards": Rule(IGNORED, True,
                                                 "override_settings never outlive a request"),
    "refiner_checkpoint": Rule(REFUSED, None, "sdtui runs one model, no refiner", ("",)),
    "refiner_switch_at": Rule(REFUSED, None, "sdtui runs one model, no refiner", (0, 0.0)),
    "disable_extra_networks": Rule(REFUSED, False, "<lora:...> tags always apply in sdtui"),
    "firstpass_image": Rule(REFUSED, None, "sdtui has no hires fix", ("",)),
    "comments": Rule(IGNORED, None, "sdtui writes no comments into the infotext", ({},)),
    "script_name": Rule(REFUSED, None, "sdtui runs no A1111 scripts", ("",)),
    "script_args": Rule(REFUSED, [], "sdtui runs no A1111 scripts"),
    "send_images": Rule(MAPPED, True),
    "save_images": Rule(MAPPED, False, "", (True,)),
    "alwayson_scripts": Rule(REFUSED, {}, "sdtui runs no A1111 extensions"),
    "force_task_id": Rule(IGNORED, None, "sdtui names its own request ids"),
    "infotext": Rule(REFUSED, None, "pass the fields instead of an infotext", ("",)),
}

_HIRES = "sdtui has no hires fix"
TXT2IMG: dict[str, Rule] = {
    **_COMMON,
    "enable_hr": Rule(REFUSED, False, _HIRES),
    # Read only with enable_hr, which is refused: nothing to honour or to warn about.
    "denoising_strength": Rule(IGNORED, None, "used by the hires fix only", (0, 0.0, 0.7, 0.75)),
    "firstphase_width": Rule(IGNORED, 0, _HIRES),
    "firstphase_height": Rule(IGNORED, 0, _HIRES),
    "hr_scale": Rule(IGNORED, 2.0, _HIRES, (2,)),
    "hr_upscaler": Rule(IGNORED, None, _HIRES, ("", "Latent")),
    "hr_second_pass_steps": Rule(IGNORED, 0, _HIRES),
    "hr_resize_x": Rule(IGNORED, 0, _HIRES),
    "hr_resize_y": Rule(IGNORED, 0, _HIRES),
    "hr_checkpoint_name": Rule(IGNORED, None, _HIRES, ("", "Use same checkpoint")),
    "hr_sampler_name": Rule(IGNORED, None, _HIRES, ("", "Use same sampler")),
    "hr_scheduler": Rule(IGNORED, None, _HIRES, ("", "Use same scheduler")),
    "hr_prompt": Rule(IGNORED, "", _HIRES),
    "hr_negative_prompt": Rule(IGNORED, "", _HIRES),
    "hr_additional_modules": Rule(IGNORED, None, _HIRES, ([],)),
}

IMG2IMG: dict[str, Rule] = {
    **_COMMON,
    "init_images": Rule(MAPPED, None),
    "resize_mode": Rule(MAPPED, 0),
    "denoising_strength": Rule(MAPPED, 0.75),
    "image_cfg_scale": Rule(IGNORED, None, "for instruct-pix2pix models only"),
    "mask": Rule(MAPPED, None),
    "mask_blur_x": Rule(IGNORED, 4, "sdtui does not blur the mask"),
    "mask_blur_y": Rule(IGNORED, 4, "sdtui does not blur the mask"),
    "mask_blur": Rule(IGNORED, None, "sdtui does not blur the mask", (4,)),
    "mask_round": Rule(IGNORED, True, "sdtui keeps the mask as it is"),
    "inpainting_fill": Rule(IGNORED, 0, "sdtui fills the masked area from the init image",
                            (1,)),
    "inpaint_full_res": Rule(IGNORED, True, "sdtui inpaints at the whole picture's size",
                             (False, 0)),
    "inpaint_full_res_padding": Rule(IGNORED, 0, "sdtui inpaints at the whole picture's size",
                                     (32,)),
    "inpainting_mask_invert": Rule(REFUSED, 0, "invert the mask image instead"),
    "initial_noise_multiplier": Rule(IGNORED, None, "sdtui uses the sampler's own noise", (1,)),
    "latent_mask": Rule(REFUSED, None, "pass one mask", ("",)),
    "include_init_images": Rule(MAPPED, False),
}

ROUTES_RULES = {"txt2img": TXT2IMG, "img2img": IMG2IMG}
# A1111's resize modes sdtui has: 0 "Just resize", 1 "Crop and resize".
_FITS = {0: "resize", 1: "crop"}


class FieldError(BadSetting):
    """A request field sdtui refuses (the API answers 422 naming it)."""


@dataclass(frozen=True)
class Translated:
    params: dict[str, Any]  # the sdtui request, checked by the protocol
    parameters: dict[str, Any]  # A1111's `parameters`: the request with its defaults
    warnings: list[str]
    overrides: dict[str, Any]


def _neutral(rule: Rule, value: Any) -> bool:
    return value is None or value == rule.default or value in rule.neutral


def _image(field: str, value: Any) -> str:
    """A base64 image as A1111 takes it (a data: URL too); URLs are not fetched."""
    if not isinstance(value, str):
        raise FieldError(field, f"{field} must be a base64-encoded image")
    if value.startswith(("http://", "https://")):
        raise FieldError(field, f"{field}: sdtui does not fetch image URLs",
                         fix="send the image itself, base64-encoded")
    if value.startswith("data:image/"):
        value = value.partition(",")[2]
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(field, f"{field} is not valid base64") from None
    return value


def _number(field: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"{field} must be a number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise FieldError(field, f"{field} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _given(route: str, body: Mapping[str, Any], warnings: list[str]) -> dict[str, Any]:
    """The sdtui settings the mapped fields ask for."""
    def get(name: str) -> Any:
        value = body.get(name)
        return ROUTES_RULES[route][name].default if value is None else value

    # The protocol's count range checks the product (named as batch_size).
    count = _number("batch_size", get("batch_size"), int) * _number("n_iter", get("n_iter"), int)
    seed = _number("seed", get("seed"), int)
    sampler = body.get("sampler_name") or get("sampler_index")
    name = _named("sampler_name", samplers.parse, sampler)[0]
    schedule = body.get("scheduler")
    if schedule is not None and name in samplers.OWN_TIMESTEPS \
            and _key(schedule) not in ("", "automatic", "uniform"):
        warnings.append(f"scheduler: A1111 runs {samplers.a1111_label(name)} on its own "
                        f"timesteps, whatever the schedule type; {schedule!r} ignored")
        schedule = None
    elif schedule is not None:
        _named("scheduler", samplers.parse_schedule, schedule)
    subseed = _number("subseed", get("subseed"), int)
    given: dict[str, Any] = {
        "prompt": get("prompt"),
        "negative_prompt": get("negative_prompt"),
        "steps": _number("steps", get("steps"), int),
        # No cfg_scale: the model's own (A1111's 7 is one model's; FLUX.2 [klein] base's is 4).
        "cfg": (None if body.get("cfg_scale") is None
                else _number("cfg_scale", body["cfg_scale"], float)),
        "width": _number("width", get("width"), int),
        "height": _number("height", get("height"), int),
        "seed": None if seed == -1 else seed,
        "scheduler": sampler,
        "schedule": schedule or _schedule_of(sampler),
        "count": count,
        "variation_amount": _number("subseed_strength", get("subseed_strength"), float),
        "variation_seed": None if subseed == -1 else subseed,
        "gfpgan": 1.0 if body.get("restore_faces") else 0.0,
        "preview_every": 0,
    }
    if route == "img2img":
        images = body.get("init_images")
        if not isinstance(images, list) or not images:
            raise FieldError("init_images", "init_images must hold one base64 image")
        if len(images) > 1:
            raise FieldError("init_images", f"init_images holds {len(images)} images; sdtui "
                             "starts from one", fix="send one request per init image")
        given["init_image_data"] = _image("init_images", images[0])
        if body.get("mask"):
            given["mask_data"] = _image("mask", body["mask"])
        mode = body.get("resize_mode", 0)
        if mode not in _FITS:
            raise FieldError("resize_mode", f"resize_mode {mode!r} is not one sdtui has: 0 "
                             "(just resize) or 1 (crop and resize)")
        given["fit"] = _FITS[mode]
        given["strength"] = _number("denoising_strength", get("denoising_strength"), float)
    return given


def _named(field: str, parse: Any, value: Any) -> Any:
    """A sampler or schedule name parsed, or FieldError naming the field."""
    if not isinstance(value, str):
        raise FieldError(field, f"{field} must be a name, got {value!r}")
    try:
        return parse(value)
    except samplers.UnknownSampler as exc:
        raise FieldError(field, f"{field}: {exc}") from None


def _key(name: Any) -> str:
    return str(name).strip().lower()


def _schedule_of(sampler: str) -> str:
    """No `scheduler`: A1111's Automatic, unless the sampler's name implies one ("DPM++ 2M
    Karras", as before A1111 1.9)."""
    return samplers.parse(sampler)[1] or samplers.AUTOMATIC


# sdtui request fields -> the A1111 field a protocol error about them names.
_A1111_NAME = {"cfg": "cfg_scale", "scheduler": "sampler_name", "schedule": "scheduler",
               "count": "batch_size", "variation_amount": "subseed_strength",
               "variation_seed": "subseed", "gfpgan": "restore_faces",
               "init_image": "init_images", "strength": "denoising_strength",
               "fit": "resize_mode"}


def translate(route: str, body: Any, *, preview_every: int = 0) -> Translated:
    """The sdtui request an A1111 body asks for; FieldError names a field sdtui refuses."""
    if not isinstance(body, dict):
        raise FieldError("body", "the request body must be a JSON object")
    rules = ROUTES_RULES[route]
    warnings: list[str] = []
    for name, value in body.items():
        rule = rules.get(name)
        if rule is None:
            warnings.append(f"{name}: not an A1111 {route} field; ignored")
        elif rule.policy != MAPPED and not _neutral(rule, value):
            if rule.policy == REFUSED:
                raise FieldError(name, f"{name}: {rule.why}",
                                 fix=f"leave {name} out of the request")
            warnings.append(f"{name}: {rule.why}; ignored")
    if body.get("save_images") is False:
        warnings.append("save_images: sdtui saves every image to the deployment's outputs")
    overrides = body.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise FieldError("override_settings", "override_settings must be a JSON object")
    given = _given(route, body, warnings)
    given["preview_every"] = preview_every
    try:
        settings = resolve_generate(given, config=_NO_CONFIG)
        params = request_params(settings)
    except BadSetting as exc:
        name = _A1111_NAME.get(exc.setting, exc.setting)
        said = "batch_size × n_iter" if exc.setting == "count" else name
        message = exc.message.replace(exc.setting, said, 1)
        raise FieldError(name, message, fix=f"change {name}") from None
    parameters = {name: rule.default for name, rule in rules.items()}
    parameters.update(body)
    if route == "img2img" and not body.get("include_init_images"):
        parameters["init_images"] = parameters["mask"] = None  # as A1111 answers
    return Translated(params, parameters, warnings, overrides)


def _no_config() -> Any:
    """An empty config: an API request is A1111's request, whatever [generate] says."""
    from sdtui.config import Config

    return Config()


_NO_CONFIG = _no_config()
