"""Write a tiny, randomly initialised SD 3.5 diffusers folder (Medium, Large or Large Turbo) for
tests: a few MB, deterministic by seed, loadable offline.

    python -m sdtui.devtools.tiny_sd3 OUT [--variant medium|large|large-turbo] [--no-t5]
                                          [--seed N]

Every component is diffusers' or transformers' own class in the shapes diffusers' fast tests
use (tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3.py at v0.42.1): an
`SD3Transformer2DModel` 32 wide, two `CLIPTextModelWithProjection`s 32 wide (CLIP-L, CLIP-G)
and a T5 v1.1-layout `T5EncoderModel`. Where those tests shrink what the real model has, the
real thing is kept: SD 3.5's 2x2 patches over 16 latent channels, a VAE with the real four-
level ×8 downscale and SD 3.5's scaling and shift factors, and a T5 as wide as both CLIPs'
embeddings together (the real 4096 ≥ 768 + 1280), so the pipeline pads CLIP to T5's width as
it does for the real one. Medium is MMDiT-X (dual attention in its first block); every SD 3.5
normalises q and k (RMSNorm). Large Turbo's weights and configs are laid out as Large's; it is
told apart by its name (the folder name carries "turbo", as Stability's releases do).

`--no-t5` leaves T5 out (text_encoder_3 and tokenizer_3 null), as people run SD 3.5 to save
memory. Tokenizers: CLIP's are the real 49,408-token vocabulary shipped in sdtui's assets
(SDXL's pair: CLIP-G pads with "!"); T5's is sdtui.devtools.tiny_flux's small offline one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from sdtui.devtools.tiny_flux import TINY_CLIP, TINY_FLUX_VAE, TINY_T5, t5_tokenizer

VARIANTS = ("medium", "large", "large-turbo")

TINY_SD3_TRANSFORMER = {
    "sample_size": 32, "patch_size": 2, "in_channels": 16, "out_channels": 16,
    "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 4,
    "joint_attention_dim": 64, "caption_projection_dim": 32, "pooled_projection_dim": 64,
    "pos_embed_max_size": 64, "qk_norm": "rms_norm",
}
# MMDiT-X (SD 3.5 Medium): its first blocks attend twice (stabilityai/stable-diffusion-3.5-
# medium/transformer/config.json: dual_attention_layers 0-12 of 24).
DUAL_ATTENTION = {"medium": (0,), "large": (), "large-turbo": ()}
# SD 3.5's own VAE factors (stabilityai/stable-diffusion-3.5-large/vae/config.json).
TINY_SD3_VAE = {**TINY_FLUX_VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609}
TINY_CLIP_G = {**TINY_CLIP, "hidden_act": "gelu", "pad_token_id": 0}
TINY_SD3_T5 = {**TINY_T5, "d_model": 64}
# The released scheduler config (stabilityai/stable-diffusion-3.5-*/scheduler/
# scheduler_config.json): a fixed shift of 3.
SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}


def build_tiny_sd3_pipeline(seed: int = 0, variant: str = "medium", t5: bool = True) -> Any:
    """A StableDiffusion3Pipeline of random weights, deterministic by seed."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from sdtui.worker.families.base import ASSETS
    from sdtui.worker.ldm import tokenizer

    if variant not in VARIANTS:
        raise ValueError(f"unknown SD 3.5 variant {variant!r}; pick one of {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**TINY_SD3_TRANSFORMER,
                                        dual_attention_layers=DUAL_ATTENTION[variant])
    vae = AutoencoderKL(**TINY_SD3_VAE)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP_G)).eval()
    text_encoder_3 = tokenizer_3 = None
    if t5:
        tokenizer_3 = t5_tokenizer()
        text_encoder_3 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_3),
                                                 **TINY_SD3_T5)).eval()
    return StableDiffusion3Pipeline(
        transformer=transformer, vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer(ASSETS / "sdxl" / "tokenizer"),
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer(ASSETS / "sdxl" / "tokenizer_2"),
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER))


def write_tiny_sd3(out: Path | str, variant: str = "medium", seed: int = 0,
                   t5: bool = True) -> Path:
    """A tiny SD 3.5 diffusers folder at OUT (created; must not exist). Name a Large Turbo
    folder with "turbo" in it, as Stability names theirs."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; pick a new path")
    build_tiny_sd3_pipeline(seed, variant, t5).save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="medium")
    parser.add_argument("--no-t5", dest="t5", action="store_false",
                        help="leave the T5-XXL text encoder out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_sd3(args.out, args.variant, args.seed, args.t5))


if __name__ == "__main__":
    main()
