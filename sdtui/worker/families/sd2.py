"""Stable Diffusion 2.x: the OpenCLIP ViT-H/14 text encoder (its penultimate layer), 512²
epsilon (v2-1_512) or 768² v-prediction (v2-1_768); same VAE as SD 1.x."""

from __future__ import annotations

from typing import Any

from sdtui.worker.families.base import ASSETS, Family, TextEncoder
from sdtui.worker.families.sd1 import SD_LATENT_RGB, SD_OPTIONS, SD_PIPELINES

TEXT_PREFIX = "cond_stage_model.model."
# SD 2.x conditions on OpenCLIP's penultimate layer: the last of its 24 blocks is never run,
# and the text projection and logit scale belong to CLIP's contrastive head.
_UNUSED = (TEXT_PREFIX + "transformer.resblocks.23.", TEXT_PREFIX + "text_projection",
           TEXT_PREFIX + "logit_scale")


def guess_v_prediction(unet: Any) -> bool:
    """A1111's test (modules/sd_models_config.py, is_using_v_parameterization_for_sd2): at the
    last timestep an epsilon model returns about its input, a v model something far below it."""
    import torch

    if unet.config.in_channels != 4:
        return False  # SD 2.x inpainting is an epsilon model
    param = next(unet.parameters())
    x = torch.full((1, 4, 8, 8), 0.5, dtype=param.dtype,
                   device=param.device)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=param.dtype,
                         device=param.device)
    with torch.inference_mode():
        out = unet(x, torch.tensor([999], device=param.device), encoder_hidden_states=context)
    return (out.sample - x).float().mean().item() < -1


FAMILY = Family(
    id="sd2",
    label="SD 2.x",
    assets=ASSETS / "sd2",
    pipelines=SD_PIPELINES,
    text_encoders=(
        TextEncoder("text_encoder", "tokenizer", TEXT_PREFIX, "open_clip",
                    "OpenCLIP ViT-H text encoder"),
    ),
    pipeline_options=SD_OPTIONS,
    latent_rgb=SD_LATENT_RGB,
    unused=lambda key: key.startswith(_UNUSED),
    guess_v_prediction=guess_v_prediction,
)
