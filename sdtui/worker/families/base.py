"""What makes a model family a family: where its configs come from, how its single-file
checkpoints are laid out, which diffusers pipelines run it, and its quirks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

ASSETS = Path(str(files("sdtui") / "assets"))

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
UNET_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"

EPSILON, V_PREDICTION = "epsilon", "v_prediction"


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a family and where its weights sit in a single-file checkpoint."""

    name: str  # the pipeline component: text_encoder, text_encoder_2
    tokenizer: str  # its tokenizer component
    prefix: str  # the key prefix in the original single-file layout
    layout: str  # "clip": transformers' CLIP keys; "open_clip": OpenCLIP's resblocks
    label: str  # for messages
    with_projection: bool = False  # CLIPTextModelWithProjection (SDXL's pooled embedding)


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

    def default_size(self, prediction: str) -> int:
        return self.sizes[prediction]

    @property
    def prefixes(self) -> dict[str, str]:
        """Each component's key prefix in the single-file layout, for the completeness check."""
        return {"UNet": UNET_PREFIX, "VAE": VAE_PREFIX,
                **{t.label: t.prefix for t in self.text_encoders}}
