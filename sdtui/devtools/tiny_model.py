"""Write a tiny, randomly initialised SD 1.x pipeline for tests (a few MB, deterministic by seed).

    python -m sdtui.devtools.tiny_model OUT --format diffusers|ckpt|safetensors [--seed N]

It has SD 1.x's building blocks at toy sizes (a two-level UNet, the four-level ×8 VAE, a CLIP
text encoder with the real 49,408-token vocabulary). `diffusers` writes a model folder OUT.
`ckpt` and `safetensors` write the original single-file layout of sd-v1-4.ckpt
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`) to OUT,
plus the sidecar `<stem of OUT>.config/` with the toy dims (a real SD 1.x checkpoint needs none).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdtui.modelfiles import CONFIG_DIR_SUFFIX
from sdtui.worker.models import SD1_ASSETS

FORMATS = ("diffusers", "ckpt", "safetensors")

# Two UNet levels with attention only at the lower one, one layer each, and one layer per VAE
# level keep 64x64 at tens of ms per step on a CPU; the VAE keeps all four levels (x8).
TINY_UNET = {
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "sample_size": 8,
}
TINY_VAE = {"block_out_channels": (32, 32, 32, 32), "layers_per_block": 1, "sample_size": 64}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    unet_config = {**UNet2DConditionModel.load_config(SD1_ASSETS, subfolder="unet"), **TINY_UNET}
    vae_config = {**AutoencoderKL.load_config(SD1_ASSETS, subfolder="vae"), **TINY_VAE}
    text_config = CLIPTextConfig.from_pretrained(SD1_ASSETS / "text_encoder", **TINY_TEXT)
    return StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(unet_config),
        vae=AutoencoderKL.from_config(vae_config),
        text_encoder=CLIPTextModel(text_config).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(SD1_ASSETS / "tokenizer"),
        scheduler=PNDMScheduler.from_pretrained(SD1_ASSETS, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# --- diffusers -> original LDM keys, ported from diffusers'
# scripts/convert_diffusers_to_original_stable_diffusion.py, which hard-codes SD 1.x's four
# levels of two layers; here the level and layer counts come from the model's config.


def _unet_prefix_map(config: Any) -> list[tuple[str, str]]:
    """(original, diffusers) prefixes; LDM numbers every layer of every level in one list."""
    levels, per = len(config.block_out_channels), config.layers_per_block
    pairs = []
    for i in range(levels):
        down_attn = "CrossAttn" in config.down_block_types[i]
        up_attn = "CrossAttn" in config.up_block_types[i]
        for j in range(per):
            index = (per + 1) * i + j + 1
            pairs.append((f"input_blocks.{index}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn:
                pairs.append((f"input_blocks.{index}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(per + 1):
            index = (per + 1) * i + j
            pairs.append((f"output_blocks.{index}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn:
                pairs.append((f"output_blocks.{index}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            down = f"input_blocks.{(per + 1) * (i + 1)}.0.op."
            pairs.append((down, f"down_blocks.{i}.downsamplers.0.conv."))
            up = f"output_blocks.{(per + 1) * i + per}.{2 if up_attn else 1}."
            pairs.append((up, f"up_blocks.{i}.upsamplers.0."))
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    pairs += [(f"middle_block.{2 * j}.", f"mid_block.resnets.{j}.") for j in range(2)]
    return pairs


UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
UNET_RESNET = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]


def unet_to_original(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefix_map(unet.config)
    out = {}
    for key, tensor in unet.state_dict().items():
        new = key
        for diffusers_prefix, original_prefix in UNET_TOP.items():
            if new.startswith(diffusers_prefix):
                new = original_prefix + new[len(diffusers_prefix) :]
        if "resnets" in key:
            for original, diffusers in UNET_RESNET:
                new = new.replace(diffusers, original)
        for original, diffusers in prefixes:
            new = new.replace(diffusers, original)
        out["model.diffusion_model." + new] = tensor
    return out


def _vae_prefix_map(config: Any) -> list[tuple[str, str]]:
    levels, per = len(config.block_out_channels), config.layers_per_block
    pairs = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(levels):
        up = levels - 1 - i  # LDM numbers decoder levels from the bottom
        for j in range(per):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{up}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(per + 1):
            pairs.append((f"decoder.up.{up}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    pairs += [(f"mid.block_{i + 1}.", f"mid_block.resnets.{i}.") for i in range(2)]
    return pairs


VAE_ATTENTION = [
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]


def vae_to_original(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    prefixes = _vae_prefix_map(vae.config)
    out = {}
    for key, tensor in vae.state_dict().items():
        new = key
        for original, diffusers in prefixes:
            new = new.replace(diffusers, original)
        if "attentions" in key:
            for original, diffusers in VAE_ATTENTION:
                new = new.replace(diffusers, original)
            if new.endswith(".weight") and tensor.ndim == 2:
                tensor = tensor.reshape(*tensor.shape, 1, 1)  # LDM uses 1x1 convs here
        out["first_stage_model." + new] = tensor
    return out


def text_encoder_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # sd-v1-4.ckpt stores transformers' CLIPTextModel keys as they were: under `text_model.`
    return {
        "cond_stage_model.transformer."
        + (key if key.startswith("text_model.") else "text_model." + key): tensor
        for key, tensor in state.items()
    }


def original_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    state = {
        **unet_to_original(pipe.unet),
        **vae_to_original(pipe.vae),
        **text_encoder_to_original(pipe.text_encoder.state_dict()),
    }
    return {key: tensor.contiguous() for key, tensor in state.items()}


def write_config_folder(pipe: StableDiffusionPipeline, folder: Path) -> None:
    """The diffusers-layout sidecar: configs and tokenizer, no weights."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(SD1_ASSETS / "model_index.json", folder)
    shutil.copytree(SD1_ASSETS / "tokenizer", folder / "tokenizer")
    pipe.unet.save_config(folder / "unet")
    pipe.vae.save_config(folder / "vae")
    pipe.scheduler.save_config(folder / "scheduler")
    pipe.text_encoder.config.save_pretrained(folder / "text_encoder")


def write_tiny_model(out: Path, fmt: str, seed: int = 0) -> Path:
    """Write the tiny model in `fmt` at `out` and return the path to pass as --model."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; pick one of {', '.join(FORMATS)}")
    out = Path(out)
    pipe = build_tiny_pipeline(seed)
    if fmt == "diffusers":
        pipe.save_pretrained(out, safe_serialization=True)
        return out
    if out.suffix != f".{fmt}":
        raise ValueError(f"{out} must end in .{fmt} for --format {fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = original_state_dict(pipe)
    if fmt == "ckpt":
        torch.save({"state_dict": state, "global_step": 0}, out)
    else:
        from safetensors.torch import save_file

        save_file(state, out)
    write_config_folder(pipe, out.with_name(out.stem + CONFIG_DIR_SUFFIX))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a folder (diffusers) or a .ckpt/.safetensors file")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_tiny_model(args.out, args.format, args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(path)


if __name__ == "__main__":
    main()
