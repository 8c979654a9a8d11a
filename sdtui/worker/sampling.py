"""One `generate` request run on a loaded pipeline: schedulers, seeds, previews and cancel;
img2img, weighted prompts, variations, and face restoration / upscaling after the decode.

The pipeline is called with output_type="latent" and the VAE decode happens here, so a
cancelled image never pays for a decode and previews never touch the VAE.
"""

from __future__ import annotations

import io
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from sdtui import __version__, loras, protocol, samplers
from sdtui.errors import BadInput
from sdtui.worker import inpaint, memory_fit
from sdtui.worker.families import CFG, EMBEDDED, Family
from sdtui.worker.img2img import decode_init_image, fit_image
from sdtui.worker.lora import LORA_FAMILIES, LoraSet
from sdtui.worker.models import LoadedModel
from sdtui.worker.postprocess import PostProcessor
from sdtui.worker.prompts import PipelinePrompts, PromptEncoder
from sdtui.worker.schedulers import build_scheduler
from sdtui.worker.variations import variation_noise

Emit = Callable[[str, dict[str, Any]], None]


class Cancelled(Exception):
    pass


def png_bytes(image: Image.Image, compress_level: int = 4) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


class ImageInvalid(RuntimeError):
    """A finished image whose latents are NaN or all zeros (a black picture): not saved."""


def unpacked(latents: torch.Tensor, family: Family, width: int, height: int) -> torch.Tensor:
    """The latents as (batch, channels, h, w). FLUX.1's pipelines hold them packed in 2x2
    patches, (batch, h/2 * w/2, channels * 4): undone here as FluxPipeline._unpack_latents
    does. FLUX.2's hold 2x2-patchified tokens while sampling (unpatchified here as ComfyUI's
    Flux2 preview does) and hand back the VAE's own latents."""
    if family.patchified_latents and latents.ndim == 3:
        batch, _, channels = latents.shape
        h, w = height // family.size_multiple, width // family.size_multiple
        latents = latents.transpose(1, 2).reshape(batch, channels // 4, 2, 2, h, w)
        return latents.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels // 4, h * 2, w * 2)
    if not family.packed_latents:
        return latents
    batch, _, packed = latents.shape
    channels, h, w = packed // 4, height // family.size_multiple, width // family.size_multiple
    latents = latents.view(batch, h, w, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(batch, channels, h * 2, w * 2)


def latent_preview(latents: torch.Tensor, family: Family) -> Image.Image:
    """The (unpacked) latents projected to RGB with the family's linear factors: a matmul,
    not a decode."""
    factors = torch.tensor(family.latent_rgb)
    rgb = torch.einsum("chw,cr->hwr", latents[0, :family.latent_channels].float().cpu(),
                       factors)
    rgb = rgb + torch.tensor(family.latent_rgb_bias)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _walk(seed: int, index: int) -> int:
    return (seed + index) % (protocol.MAX_SEED + 1)


class Sampler:
    def __init__(self, model: LoadedModel, model_sha256: str | None = None,
                 model_source: str | None = None) -> None:
        self.model = model
        # The model file's sha256, from the deployment that copied it (the images record it).
        self.model_sha256 = model_sha256
        # Where a fetched model came from, pinned (hf:ORG/REPO/FILE@COMMIT, civitai:ID), so
        # `--from-png` fetches exactly the same files again.
        self.model_source = model_source
        self.pipe = model.pipe
        self.pipe.set_progress_bar_config(disable=True)
        self._base_scheduler_config = dict(self.pipe.scheduler.config)
        self._scheduler_cache: dict[str, Any] = {}
        self._img2img: Any = None
        self._inpaint: Any = None
        self.loras = LoraSet(self.pipe, model.path, model.family)
        self._prompts: PromptEncoder | PipelinePrompts | None = None
        self.post = PostProcessor(model.path, model.device)

    def _family_pipeline(self, kind: str) -> Any:
        """The family's img2img or inpaint pipeline over the loaded components."""
        components = self.pipe.components
        options = {k: v for k, v in self.model.family.pipeline_options.items()
                   if k not in components}
        pipe = self.model.pipeline_class(kind)(**components, **options)
        pipe.set_progress_bar_config(disable=True)
        if self.model.memory is not None:  # the same placement, freed at the end of each call
            memory_fit.place(pipe, self.model.memory, self.model.device)
        return pipe

    @property
    def img2img(self) -> Any:
        if self._img2img is None:
            self._img2img = self._family_pipeline("img2img")
        self._img2img.scheduler = self.pipe.scheduler
        return self._img2img

    @property
    def inpaint(self) -> Any:
        if self._inpaint is None:
            self._inpaint = self._family_pipeline("inpaint")
        self._inpaint.scheduler = self.pipe.scheduler
        return self._inpaint

    @property
    def prompts(self) -> PromptEncoder | PipelinePrompts:
        if self._prompts is None:
            self._prompts = (PromptEncoder(self.pipe, self.model.family.id)
                             if self.model.family.compel else
                             PipelinePrompts(self.pipe, cfg=self.model.guidance == CFG))
        return self._prompts

    def use_scheduler(self, name: str, schedule: str = samplers.DEFAULT_SCHEDULE) -> None:
        key = f"{name}/{schedule}"
        if key not in self._scheduler_cache:
            self._scheduler_cache[key] = build_scheduler(
                self._base_scheduler_config, name, schedule, self.model.family.sampler_table)
        self.pipe.scheduler = self._scheduler_cache[key]

    def decode(self, latents: torch.Tensor) -> Image.Image:
        """The image of (unpacked) latents; ImageInvalid for NaN or all-zero latents, or a
        decode that overflowed to NaN, which would all be a black picture."""
        self._check(latents)
        vae = self.pipe.vae
        if (self.model.family.upcast_vae and vae.dtype == torch.float16
                and vae.config.force_upcast):
            # SDXL's VAE overflows in float16 (black or NaN images); decode it in float32 as
            # diffusers' own SDXL pipeline does. (Its img2img casts it back after encoding.)
            vae.to(torch.float32)
        with torch.inference_mode():
            latents = latents.to(vae.dtype)
            if not self.model.family.patchified_latents:  # FLUX.2's come ready for its VAE
                latents = latents / vae.config.scaling_factor
            if vae.config.get("shift_factor") is not None:  # FLUX.1's VAE
                latents = latents + vae.config.shift_factor
            image = vae.decode(latents, return_dict=False)[0]
        self._check(image, zeros_are_black=False)  # a decoded 0 is grey
        return self.pipe.image_processor.postprocess(image, output_type="pil")[0]

    def _check(self, values: torch.Tensor, zeros_are_black: bool = True) -> None:
        if not torch.isfinite(values).all() or (zeros_are_black and not values.any()):
            raise ImageInvalid(
                f"the image came out {'NaN' if values.isnan().any() else 'black'} "
                f"({self.model.dtype} on {self.model.device}), so it was not saved; the images "
                f"before it are kept")

    def params_for(self, req: dict[str, Any], seed: int, index: int,
                   variation_seed: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in req.items() if k not in ("type", "id")}
        params.update(
            seed=seed,
            variation_seed=variation_seed,
            base_seed=req["seed"],
            index=index,
            model=self.model.path,
            model_sha256=self.model_sha256,
            model_format=self.model.format,
            family=self.model.family.id,
            device=self.model.device,
            **self._guidance_params(req),
            dtype=self.model.dtype,
            generator="sdtui " + __version__,
        )
        if self.model_source:
            params["model_source"] = self.model_source
        return params

    def _guidance_params(self, req: dict[str, Any]) -> dict[str, Any]:
        """What steered the image: cfg for CFG models; for FLUX.1 no CFG ran (cfg 1, as Forge
        records it) and [dev]'s embedded guidance did."""
        if self.model.guidance == CFG:
            return {}
        embedded = self.model.guidance == EMBEDDED
        return {"cfg": 1.0, "guidance": self._guidance(req) if embedded else None}

    def _guidance_scale(self, req: dict[str, Any]) -> float:
        """The pipeline's guidance_scale: the request's cfg, the embedded guidance, or for a
        model that takes neither (FLUX.1 [schnell], SD 3.5 Large Turbo) 1, where diffusers runs
        no CFG pass."""
        if self.model.guidance == CFG:
            return req["cfg"]
        return self._guidance(req) if self.model.guidance == EMBEDDED else 1.0

    def _guidance(self, req: dict[str, Any]) -> float:
        return req["guidance"] if req["guidance"] is not None else (
            self.model.family.default_guidance)

    def _seeds(self, req: dict[str, Any], index: int) -> tuple[int, int | None]:
        """An image's seed and variation seed. A batch of variations keeps the seed and walks
        the variation seed; otherwise the seed walks. Both wrap past the highest seed, so
        every image records a seed a re-run accepts."""
        if not req["variation_amount"]:
            return _walk(req["seed"], index), None
        return req["seed"], _walk(req["variation_seed"], index)

    def _sample(self, req: dict[str, Any], seed: int, variation_seed: int | None,
                init: Image.Image | None, embeds: dict[str, torch.Tensor],
                on_step: Any, mask: Image.Image | None = None) -> torch.Tensor | Image.Image:
        """Latents, or the init image itself when img2img has no step to take."""
        if hasattr(self.pipe.scheduler, "noise_sampler_seed"):  # DPM++ SDE's Brownian tree
            self.pipe.scheduler.noise_sampler_seed = seed
        flux = self.model.family.packed_latents
        common = {
            **embeds,
            "num_inference_steps": req["steps"],
            "guidance_scale": self._guidance_scale(req),
            "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": "latent",
            "callback_on_step_end": on_step,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        with torch.inference_mode():
            if init is not None:
                if int(req["steps"] * req["strength"]) < 1:
                    return init  # strength 0 (or too few steps to change anything)
                if mask is not None:
                    return self.inpaint(image=init, mask_image=mask, strength=req["strength"],
                                        width=req["width"], height=req["height"],
                                        **common).images
                # FLUX.1's img2img sizes to 1024² unless told; SD's takes the image's size.
                size = {"width": req["width"], "height": req["height"]} if flux else {}
                return self.img2img(image=init, strength=req["strength"], **size,
                                    **common).images
            latents = None
            if variation_seed is not None:
                shape = (1, self.pipe.vae.config.latent_channels,
                         req["height"] // self.pipe.vae_scale_factor,
                         req["width"] // self.pipe.vae_scale_factor)
                if self.model.family.patchified_latents:  # FLUX.2 draws patchified noise
                    multiple = self.model.family.size_multiple
                    shape = (1, self.model.denoiser.config.in_channels,
                             req["height"] // multiple, req["width"] // multiple)
                noise = variation_noise(seed, variation_seed, req["variation_amount"], shape)
                if flux:  # packed as FluxPipeline.prepare_latents packs its own noise
                    noise = self.pipe._pack_latents(noise, *shape)
                latents = noise.to(self.pipe.device, self.model.denoiser.dtype)
            return self.pipe(width=req["width"], height=req["height"], latents=latents,
                             **common).images

    def run(self, req: dict[str, Any], emit: Emit, cancel: threading.Event) -> int:
        """Generate every image of `req`, emitting events. Returns how many images finished.
        Raises Cancelled after emitting the images that finished before the cancel. The
        request's LoRAs apply to it alone."""
        # No size given means the model's own (1024 for SDXL); the params record what ran.
        req["width"] = req["width"] or self.model.default_size
        req["height"] = req["height"] or self.model.default_size
        info = self.model.info()
        req.update(protocol.with_model_defaults(info, req))  # the params record what ran
        refusal = protocol.model_refusal(info, req) or (
            self.model.memory and self.model.memory.size_refusal(req["width"], req["height"]))
        if refusal:
            raise BadInput(refusal)
        if self.model.family.sampler_table == samplers.FLOW:
            req["schedule"] = samplers.FLOW_SCHEDULE  # recorded as Forge's "Simple"
        prompt, refs = loras.parse_prompt(req["prompt"], req["negative_prompt"])
        if req["init_image"] and not req["mask"] and not self.model.family.pipelines.img2img:
            raise BadInput(f"{self.model.family.label} has no img2img (its pipeline takes an "
                           f"image as a reference to edit, not as a start); add --mask FILE to "
                           f"repaint part of it, or drop --init-image")
        if refs and self.model.family.id not in LORA_FAMILIES:
            raise BadInput(f"LoRAs do not run on {self.model.family.label} models yet; drop "
                           f"the <lora:...> tags")
        self.use_scheduler(req["scheduler"], req["schedule"])
        self.post.check(req)
        extra = {"loras": self.loras.apply(refs)} if refs else {}
        try:
            return self._run(req, emit, cancel, prompt, extra)
        finally:
            self.loras.reset()

    def _run(self, req: dict[str, Any], emit: Emit, cancel: threading.Event, prompt: str,
             extra: dict[str, Any]) -> int:
        init = mask = None
        if req["mask"]:
            init, mask = inpaint.load_inputs(req)
        elif req["init_image"]:
            init = fit_image(decode_init_image(req["init_image"]), req["width"], req["height"],
                             req["fit"])
        if req["variation_amount"] and req["variation_seed"] is None:
            req["variation_seed"] = secrets.randbelow(protocol.MAX_SEED + 1)
        rid, every = req["id"], req["preview_every"]
        embeds = self.prompts.encode(prompt, req["negative_prompt"])  # once per batch

        def note(message: str) -> None:
            emit("log", {"level": "warning", "message": message})

        finished = 0
        for index in range(req["count"]):
            if cancel.is_set():
                raise Cancelled(finished)
            seed, variation_seed = self._seeds(req, index)
            started = time.monotonic()

            def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any],
                        index: int = index) -> dict:
                if cancel.is_set():
                    pipe._interrupt = True
                    return kwargs
                done, total = step + 1, pipe.num_timesteps
                emit("progress", {"id": rid, "index": index, "step": done, "total": total})
                if every and (done % every == 0) and done < total:
                    latents = unpacked(kwargs["latents"], self.model.family, req["width"],
                                       req["height"])
                    preview = png_bytes(latent_preview(latents, self.model.family),
                                        compress_level=1)
                    emit("preview", {"id": rid, "index": index, "step": done, "png": preview})
                return kwargs

            result = self._sample(req, seed, variation_seed, init, embeds, on_step, mask)
            if cancel.is_set():
                raise Cancelled(finished)
            image = result if isinstance(result, Image.Image) else self.decode(
                unpacked(result, self.model.family, req["width"], req["height"]))
            if mask is not None:
                image = inpaint.paste_back(image, init, mask)
            image = self.post.apply(image, req, note)
            emit(
                "image",
                {
                    "id": rid,
                    "index": index,
                    "seed": seed,
                    "png": png_bytes(image),
                    "params": self.params_for(req, seed, index, variation_seed) | extra,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
            finished += 1
        return finished
