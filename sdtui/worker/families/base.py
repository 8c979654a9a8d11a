"""What makes a model family a family: where its configs come from, how its single-file
checkpoints are laid out, which diffusers pipelines run it, and its quirks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from sdtui.samplers import DIFFUSION

ASSETS = Path(str(files("sdtui") / "assets"))

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
UNET_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"

EPSILON, V_PREDICTION = "epsilon", "v_prediction"

# How a family steers towards the prompt. CFG: classifier-free guidance, with a negative prompt
# (the request's cfg). EMBEDDED: a distilled guidance strength the denoiser takes as an input,
# no negative prompt (FLUX.1 [dev]; the request's guidance). NO_GUIDANCE: neither (FLUX.1
# [schnell]).
CFG, EMBEDDED, NO_GUIDANCE = "cfg", "embedded", "none"


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a family and where its weights sit in a single-file checkpoint."""

    name: str  # the pipeline component: text_encoder, text_encoder_2
    tokenizer: str  # its tokenizer component
    prefix: str  # the key prefix in the original single-file layout
    layout: str  # "clip": transformers' CLIP keys; "open_clip": OpenCLIP's resblocks
    label: str  # for messages
    with_projection: bool = False  # CLIPTextModelWithProjection (SDXL's pooled embedding)
    # A model may leave it out and run on its other text encoders (SD 3.5's T5).
    optional: bool = False


@dataclass(frozen=True)
class Pipelines:
    text2img: str
    img2img: str
    inpaint: str


@dataclass(frozen=True)
class Family:
    id: str  # recorded in `ready`, in refusals and in every image's params
    label: str
    assets: Path  # shipped diffusers-layout configs and tokenizers
    pipelines: Pipelines
    text_encoders: tuple[TextEncoder, ...]
    # Extra arguments for the diffusers pipeline's constructor and from_pretrained.
    pipeline_options: dict[str, object]
    # Linear latent -> RGB projection (and bias) for previews: a matmul, not a VAE decode.
    latent_rgb: tuple[tuple[float, float, float], ...]
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Decode quirk: a VAE that overflows in float16 is decoded in float32 (diffusers'
    # force_upcast), as diffusers' own pipeline for the family does.
    upcast_vae: bool = False
    # The size (width and height) a request without one gets, by prediction type: what the
    # family was trained at.
    sizes: dict[str, int] = field(default_factory=lambda: {EPSILON: 512, V_PREDICTION: 768})
    # Tensors of the family's real checkpoints that inference never uses (beyond the
    # leftovers every family has): skipped while reading.
    unused: Callable[[str], bool] = field(default=lambda key: False)
    # When nothing beside a checkpoint says, guess v-prediction from the loaded UNet.
    guess_v_prediction: Callable[[object], bool | None] | None = None

    # The denoiser's pipeline component: a UNet, or a transformer (FLUX.1, SD 3.5).
    denoiser: str = "unet"
    latent_channels: int = 4
    # Width and height must be multiples of this: the VAE's downscale times the denoiser's
    # patch size (8 for SD's UNets, 16 for FLUX.1's 2x2-packed latents).
    size_multiple: int = 8
    # The latents the pipeline samples are packed in 2x2 patches (FLUX.1): unpacked before a
    # preview or a decode.
    packed_latents: bool = False
    # The latents are 2x2-patchified into channels, then packed one token a patch (FLUX.2):
    # the pipeline hands back VAE-ready latents; previews unpack and unpatchify the tokens.
    patchified_latents: bool = False
    sampler_table: str = DIFFUSION  # which sampler table it runs (sdtui.samplers)
    # CFG, EMBEDDED or NO_GUIDANCE for a loaded model of the family, from its denoiser's config.
    guidance_of: Callable[[Any], str] = field(default=lambda config: CFG)
    # The diffusers folder's file guidance_of reads: the denoiser's config by default; FLUX.2
    # Klein's model_index.json (is_distilled).
    guidance_config: str | None = None
    # Steps a request that names none gets, by guidance kind (a distilled model needs fewer).
    steps: dict[str, int] = field(default_factory=lambda: {CFG: 30})
    # The cfg a request that names none gets (a CFG model); None: the protocol's 7.5.
    default_cfg: float | None = None
    # Embedded guidance a request that names none gets.
    default_guidance: float | None = None
    # Prompts go through compel (weights, blends, long prompts); otherwise the pipeline's own
    # encode_prompt, which knows the family's text encoders (CLIP and T5 for FLUX.1).
    compel: bool = True
    # Trained in bfloat16: computed in it where the GPU can (see models.family_dtype).
    bf16: bool = False
    # What denoising needs beyond the weights, per latent pixel (1/8 of the image): ComfyUI's
    # memory_usage_factor for the family (see sdtui.worker.memory_fit).
    memory_factor: float = 1.0

    def default_size(self, prediction: str) -> int:
        return self.sizes[prediction]

    @property
    def prefixes(self) -> dict[str, str]:
        """Each component's key prefix in the single-file layout, for the completeness check."""
        denoiser = "UNet" if self.denoiser == "unet" else self.denoiser
        return {denoiser: UNET_PREFIX, "VAE": VAE_PREFIX,
                **{t.label: t.prefix for t in self.text_encoders if not t.optional}}
