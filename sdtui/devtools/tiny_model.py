"""Write a tiny, randomly initialised Stable Diffusion model of any family for tests (a few MB,
deterministic by seed).

    python -m sdtui.devtools.tiny_model OUT --format diffusers|ckpt|safetensors
        [--family sd1|sd2|sdxl] [--inpainting] [--seed N]

Each family keeps its real block layout (SD 1.x/2.x: four UNet levels of two layers; SDXL:
three, with 1/2/10 transformer layers; the four-level ×8 VAE; every text encoder layer and the
real 49,408-token vocabulary) and shrinks only the widths, so diffusers' own converters and
loaders see the real key layout. `--inpainting` gives the UNet the 9 input channels of an
inpainting checkpoint.

`diffusers` writes a model folder OUT, laid out like the Hub's (text encoder keys under
`text_model.`). `ckpt` and `safetensors` write the original single-file layout of the family's
released checkpoints (sd-v1-4.ckpt; v2-1_768-ema-pruned with all 24 OpenCLIP blocks;
sd_xl_base_1.0 with its `conditioner.embedders.*`) to OUT, plus the sidecar
`<stem of OUT>.config/` with the toy dims (a real checkpoint needs none).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from sdtui.modelfiles import CONFIG_DIR_SUFFIX
from sdtui.worker.families import FAMILIES, Family
from sdtui.worker.families.base import UNET_PREFIX, VAE_PREFIX

FORMATS = ("diffusers", "ckpt", "safetensors")

# Widths a tenth of the real ones (three distinct widths, so every shortcut conv of the real
# layout exists), the real depths.
_WIDTHS = (32, 64, 96, 96)
TINY_VAE = {"block_out_channels": _WIDTHS, "sample_size": 64}
_TEXT = {"hidden_size": 32, "intermediate_size": 128, "num_attention_heads": 4,
         "projection_dim": 32}
TINY = {
    "sd1": {
        "unet": {"block_out_channels": _WIDTHS, "cross_attention_dim": 32, "sample_size": 8},
        "text_encoder": _TEXT,
    },
    "sd2": {
        "unet": {"block_out_channels": _WIDTHS, "cross_attention_dim": 32,
                 "attention_head_dim": [2, 4, 6, 6], "sample_size": 8},
        "text_encoder": _TEXT,
    },
    "sdxl": {
        "unet": {"block_out_channels": _WIDTHS[:3], "cross_attention_dim": 64,
                 "attention_head_dim": [2, 4, 6], "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 32 + 6 * 8, "sample_size": 8},
        "text_encoder": _TEXT,
        "text_encoder_2": _TEXT,
    },
}
# SD 1.x's, by the names tests used before there were families.
TINY_UNET, TINY_TEXT = TINY["sd1"]["unet"], TINY["sd1"]["text_encoder"]
# SD 2.x checkpoints hold all 24 OpenCLIP blocks; the pipeline runs 23 (the penultimate layer).
OPEN_CLIP_UNUSED_BLOCKS = {"sd2": 1, "sdxl": 0}


def _family(name: str) -> Family:
    if name not in TINY:  # FLUX.1's tiny folders: sdtui.devtools.tiny_flux
        raise ValueError(f"unknown family {name!r}; pick one of {', '.join(TINY)}")
    return FAMILIES[name]


def build_tiny_pipeline(seed: int = 0, family: str = "sd1", inpainting: bool = False) -> Any:
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdtui.worker import ldm

    spec = _family(family)
    tiny = TINY[family]
    torch.manual_seed(seed)
    unet_config = {**UNet2DConditionModel.load_config(spec.assets / "unet"), **tiny["unet"]}
    if inpainting:
        unet_config["in_channels"] = 9
    vae_config = {**AutoencoderKL.load_config(spec.assets / "vae"), **TINY_VAE}
    parts: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_config(unet_config),
        "vae": AutoencoderKL.from_config(vae_config),
    }
    for encoder in spec.text_encoders:
        config = CLIPTextConfig.from_pretrained(spec.assets / encoder.name, **tiny[encoder.name])
        cls = CLIPTextModelWithProjection if encoder.with_projection else CLIPTextModel
        parts[encoder.name] = cls(config).eval()
        parts[encoder.tokenizer] = ldm.tokenizer(spec.assets / encoder.tokenizer)
    scheduler_config = json.loads((spec.assets / "scheduler" / "scheduler_config.json")
                                  .read_text())
    parts["scheduler"] = getattr(diffusers, scheduler_config["_class_name"]).from_config(
        scheduler_config)
    kind = "inpaint" if inpainting else "text2img"
    return getattr(diffusers, getattr(spec.pipelines, kind))(**parts, **spec.pipeline_options)


# --- diffusers -> original keys, ported from diffusers' scripts/convert_diffusers_to_original_*
# (which hard-code SD 1.x's and SDXL's level counts; here they come from the model's config).


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
    "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL's size/crop/pooled-text embedding
    "add_embedding.linear_2.": "label_emb.0.2.",
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
        out[UNET_PREFIX + new] = tensor
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
        out[VAE_PREFIX + new] = tensor
    return out


def hub_text_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' CLIP keys as Hub folders and released checkpoints store them: under
    `text_model.` (transformers >= 5.6 saves CLIPTextModel without it)."""
    return {
        key if key.startswith("text_model.") or key.startswith("text_projection")
        else "text_model." + key: tensor
        for key, tensor in state.items()
    }


def text_encoder_to_original(state: dict[str, torch.Tensor],
                             prefix: str = "cond_stage_model.transformer.") -> dict[str, Any]:
    return {prefix + key: tensor for key, tensor in hub_text_keys(state).items()}


_OPEN_CLIP_BLOCK = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
                    ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
                    ("self_attn.out_proj.", "attn.out_proj."))
_QKV = ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")


def open_clip_to_original(encoder: Any, prefix: str, extra_blocks: int,
                          seed: int) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model in OpenCLIP's layout (fused q/k/v, `resblocks`, a
    `text_projection` matrix and a `logit_scale`), with `extra_blocks` more random blocks at
    the end, as SD 2.x checkpoints carry the block its penultimate-layer conditioning skips."""
    state = hub_text_keys(encoder.state_dict())
    hidden = encoder.config.hidden_size
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
    }
    generator = torch.Generator().manual_seed(seed)
    projection = state.get("text_projection.weight")
    out["text_projection"] = (projection.T if projection is not None
                              else torch.randn(hidden, hidden, generator=generator) * 0.02)
    out["logit_scale"] = torch.tensor(4.6052)
    layers = encoder.config.num_hidden_layers
    for index in range(layers):
        base = f"text_model.encoder.layers.{index}."
        block = f"transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            out[block + f"attn.in_proj_{kind}"] = torch.cat(
                [state[f"{base}self_attn.{name}_proj.{kind}"] for name in "qkv"])
        for key, tensor in state.items():
            rest = key[len(base):]
            if not key.startswith(base) or rest.startswith(_QKV):
                continue
            for ours, original in _OPEN_CLIP_BLOCK:
                rest = rest.replace(ours, original)
            out[block + rest] = tensor
    template = {k: v for k, v in out.items() if k.startswith("transformer.resblocks.0.")}
    for index in range(layers, layers + extra_blocks):
        for key, tensor in template.items():
            name = key.replace("resblocks.0.", f"resblocks.{index}.")
            out[name] = torch.randn(tensor.shape, generator=generator) * 0.02
    return {prefix + key: tensor for key, tensor in out.items()}


def original_state_dict(pipe: Any, family: str = "sd1", seed: int = 0) -> dict[str, torch.Tensor]:
    """The pipeline's weights in its family's released single-file layout."""
    state = {**unet_to_original(pipe.unet), **vae_to_original(pipe.vae)}
    for encoder in _family(family).text_encoders:
        model = getattr(pipe, encoder.name)
        if encoder.layout == "clip":
            state.update(text_encoder_to_original(model.state_dict(), encoder.prefix))
        else:
            state.update(open_clip_to_original(model, encoder.prefix,
                                               OPEN_CLIP_UNUSED_BLOCKS[family], seed))
    return {key: tensor.contiguous() for key, tensor in state.items()}


def write_config_folder(pipe: Any, folder: Path, family: str = "sd1") -> None:
    """The diffusers-layout sidecar: configs and tokenizers, no weights. Its scheduler config is
    the family's shipped one, as a real single file gets (no timestep spacing in it, where a
    diffusers folder's saved config names one)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    spec = _family(family)
    shutil.copy(spec.assets / "model_index.json", folder)
    pipe.unet.save_config(folder / "unet")
    pipe.vae.save_config(folder / "vae")
    shutil.copytree(spec.assets / "scheduler", folder / "scheduler")
    for encoder in spec.text_encoders:
        getattr(pipe, encoder.name).config.save_pretrained(folder / encoder.name)
        getattr(pipe, encoder.tokenizer).save_pretrained(folder / encoder.tokenizer)


def _rewrite_text_encoders_as_hub(folder: Path, family: str) -> None:
    from safetensors.torch import load_file, save_file

    for encoder in _family(family).text_encoders:
        weights = folder / encoder.name / "model.safetensors"
        save_file(hub_text_keys(load_file(weights)), weights, metadata={"format": "pt"})


def write_tiny_model(out: Path, fmt: str, seed: int = 0, family: str = "sd1",
                     inpainting: bool = False) -> Path:
    """Write the tiny model in `fmt` at `out` and return the path to pass as --model."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; pick one of {', '.join(FORMATS)}")
    out = Path(out)
    pipe = build_tiny_pipeline(seed, family, inpainting)
    if fmt == "diffusers":
        pipe.save_pretrained(out, safe_serialization=True)
        _rewrite_text_encoders_as_hub(out, family)
        return out
    if out.suffix != f".{fmt}":
        raise ValueError(f"{out} must end in .{fmt} for --format {fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = original_state_dict(pipe, family, seed)
    if fmt == "ckpt":
        torch.save({"state_dict": state, "global_step": 0}, out)
    else:
        from safetensors.torch import save_file

        save_file(state, out)
    write_config_folder(pipe, out.with_name(out.stem + CONFIG_DIR_SUFFIX), family)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a folder (diffusers) or a .ckpt/.safetensors file")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--family", choices=tuple(TINY), default="sd1")
    parser.add_argument("--inpainting", action="store_true",
                        help="a 9-channel inpainting UNet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_tiny_model(args.out, args.format, args.seed, args.family, args.inpainting)
    except ValueError as error:
        parser.error(str(error))
    print(path)


if __name__ == "__main__":
    main()
