"""The API's answers in A1111's response shapes (AUTOMATIC1111/stable-diffusion-webui,
`modules/api/models.py` and `modules/api/api.py`; `info` is `Processed.js()` of
`modules/processing.py`)."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import PurePosixPath
from typing import Any

from sdtui import __version__, samplers
from sdtui.metadata import a1111
from sdtui.metadata.png_chunks import read_texts
from sdtui.serve.fields import FieldError, Translated
from sdtui.serve.queue import Job, png_base64


class Model:
    """The deployment's model as A1111 lists a checkpoint (SDModelItem)."""

    def __init__(self, ready: dict[str, Any]) -> None:
        self.filename = str(ready.get("model") or "model")
        self.name = PurePosixPath(self.filename).name
        self.sha256: str | None = None  # learnt from the first image the worker makes
        # What the worker found beside the model when it loaded (older workers list none).
        self.loras: list[dict[str, Any]] = list(ready.get("loras") or [])
        self.upscalers: list[dict[str, Any]] = list(ready.get("upscalers") or [])
        self.default_cfg = ready.get("default_cfg")  # None for a model that runs no CFG

    @property
    def title(self) -> str:
        if self.sha256:
            return f"{self.name} [{self.sha256[:a1111.MODEL_HASH_DIGITS]}]"
        return self.name

    def is_named(self, name: str) -> bool:
        """Whether an A1111 client means this model (by its title, with or without the hash,
        its file name or its name without suffix)."""
        stem = self.name.rsplit(".", 1)[0]
        return name.split(" [", 1)[0] in (self.name, stem, self.filename) or name == self.title

    def item(self) -> dict[str, Any]:
        return {"title": self.title, "model_name": self.name.rsplit(".", 1)[0],
                "hash": self.sha256[:a1111.MODEL_HASH_DIGITS] if self.sha256 else None,
                "sha256": self.sha256, "filename": self.filename, "config": None}


def generation(job: Job, request: Translated, model: Model, *, send_images: bool = True
               ) -> dict[str, Any]:
    """TextToImageResponse / ImageToImageResponse."""
    images = job.images
    if images and images[0].params.get("model_sha256"):
        model.sha256 = str(images[0].params["model_sha256"])
    first = images[0].params if images else {**request.params, "seed": None}
    cfg = first.get("cfg")
    if cfg is None and not images:  # a body without cfg_scale runs at the model's own
        cfg = model.default_cfg
    seeds = [image.seed for image in images]
    variation = first.get("variation_seed")
    info = {
        "prompt": first.get("prompt"), "all_prompts": [i.params.get("prompt") for i in images],
        "negative_prompt": first.get("negative_prompt", ""),
        "all_negative_prompts": [i.params.get("negative_prompt", "") for i in images],
        "seed": seeds[0] if seeds else -1, "all_seeds": seeds,
        "subseed": variation if variation is not None else -1,
        "all_subseeds": [i.params.get("variation_seed") for i in images],
        "subseed_strength": first.get("variation_amount", 0),
        "width": first.get("width"), "height": first.get("height"),
        "sampler_name": samplers.a1111_label(first["scheduler"])
        if first.get("scheduler") in samplers.SAMPLERS else first.get("scheduler"),
        "cfg_scale": cfg, "steps": first.get("steps"),
        "batch_size": request.parameters.get("batch_size", 1),
        "restore_faces": bool(first.get("gfpgan")),
        "face_restoration_model": a1111.GFPGAN_LABEL if first.get("gfpgan") else None,
        "sd_model_name": model.name.rsplit(".", 1)[0],
        "sd_model_hash": model.sha256[:a1111.MODEL_HASH_DIGITS] if model.sha256 else None,
        "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": first.get("strength") if job.route == "img2img" else None,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [a1111.format_infotext(i.params) for i in images],
        "styles": [], "job_timestamp": job.stamp, "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": f"sdtui {__version__}",
        # sdtui's: what the request asked for that it did not do, and whether it was stopped.
        "warnings": request.warnings, "interrupted": job.cancelled,
    }
    parameters = request.parameters
    if parameters.get("cfg_scale") is None:  # the body left it out: echo what ran
        parameters = {**parameters, "cfg_scale": cfg}
    return {"images": [png_base64(i) for i in images] if send_images else [],
            "parameters": parameters, "info": json.dumps(info)}


def lora_items(model: Model) -> list[dict[str, Any]]:
    """A1111's /sdapi/v1/loras (its Lora extension's create_lora_json): `alias` is kohya's
    `ss_output_name` where the file has one, as A1111's NetworkOnDisk takes it."""
    rows = []
    for lora in model.loras:
        metadata = lora.get("metadata") or {}
        rows.append({"name": lora["name"], "alias": metadata.get("ss_output_name", lora["name"]),
                     "path": lora["path"], "metadata": metadata})
    return rows


def upscaler_items(model: Model) -> list[dict[str, Any]]:
    """A1111's /sdapi/v1/upscalers (UpscalerItem): "None" first, as A1111 lists it, then the
    Real-ESRGAN weights the deployment has, under A1111's names."""
    rows = [{"name": "None", "model_name": None, "model_path": None, "model_url": None,
             "scale": 4}]
    for upscaler in model.upscalers:
        path = PurePosixPath(upscaler["path"])
        rows.append({"name": a1111.ESRGAN_LABELS[upscaler["scale"]], "model_name": path.stem,
                     "model_path": str(path), "model_url": None, "scale": upscaler["scale"]})
    return rows


def sampler_items() -> list[dict[str, Any]]:
    return [{"name": s.a1111, "aliases": [s.id, s.dream, *s.aliases], "options": {}}
            for s in samplers.SAMPLERS.values()]


def scheduler_items() -> list[dict[str, Any]]:
    rows = [(samplers.AUTOMATIC, "Automatic")] + list(samplers.SCHEDULE_A1111.items())
    return [{"name": name, "label": label, "aliases": None, "default_rho": None,
             "need_inner_model": None} for name, label in rows]


def _infotext_fields(info: str) -> dict[str, Any]:
    """A1111's parse_generation_parameters' dict: Prompt, Negative prompt, then each setting
    (Size also as Size-1 and Size-2, as it splits it)."""
    parsed = a1111.parse_infotext(info) if info else None
    if parsed is None:
        return {"Prompt": info} if info else {}
    fields: dict[str, Any] = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt}
    for key, value in parsed.settings.items():
        fields[key] = value
        if key == "Size" and "x" in value:
            fields["Size-1"], fields["Size-2"] = value.split("x", 1)
    return fields


def png_info(body: Any) -> dict[str, Any]:
    """PNGInfoResponse for a base64 PNG: its infotext, its other text chunks and the infotext's
    fields."""
    image = body.get("image") if isinstance(body, dict) else None
    if not isinstance(image, str) or not image.strip():
        raise FieldError("image", "image must be a base64-encoded PNG")
    image = image.strip()
    if image.startswith("data:image/"):
        image = image.partition(",")[2]
    try:
        png = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("image", "image is not valid base64") from None
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        return {"info": "", "items": {}, "parameters": {}}  # A1111 reads no text from others
    _, keywords = read_texts(png, ())
    texts, _ = read_texts(png, keywords)
    info = texts.pop("parameters", "")
    return {"info": info, "items": texts, "parameters": _infotext_fields(info)}
