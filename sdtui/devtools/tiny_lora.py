"""Write a tiny random LoRA in the kohya/A1111 key layout (the files people download) for one of
the tiny models `sdtui.devtools.tiny_model` writes.

    python -m sdtui.devtools.tiny_lora MODEL OUT.safetensors [--rank 4] [--seed N]

The module names are derived the way kohya-ss/sd-scripts derives them (networks/lora.py,
LoRANetwork.create_modules): every Linear, and every 1x1 Conv2d, inside the UNet's
Transformer2DModel blocks and the text encoder's CLIPAttention/CLIPMLP blocks gets
`lora_unet_` / `lora_te_` + its dotted module path with "." replaced by "_", and three tensors:
`.lora_down.weight` (rank x in), `.lora_up.weight` (out x rank) and `.alpha`. Text-encoder
paths start with `text_model.`, as transformers' CLIPTextModel had them when those files
were trained. The safetensors metadata carries kohya's `ss_` fields.

SDXL LoRAs are named as kohya's sdxl_train_network names them: it trains the original (sgm)
UNet, so UNet modules carry its block names (`lora_unet_input_blocks_4_1_...`), and the two
text encoders are `lora_te1_` and `lora_te2_`. The family is the one the worker detects.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

UNET_TARGETS = ("Transformer2DModel",)
TEXT_ENCODER_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
# kohya's ss_base_model_version for each family sdtui's tiny models have.
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def kohya_modules(root: torch.nn.Module, prefix: str, targets: tuple[str, ...],
                  path_prefix: str = "") -> list[tuple[str, torch.nn.Module]]:
    """(kohya LoRA name, module) for every module kohya's LoRANetwork wraps under `root`."""
    found = []
    for name, module in root.named_modules():
        if type(module).__name__ not in targets:
            continue
        for child_name, child in module.named_modules():
            kind = type(child).__name__
            if kind == "Linear" or (kind == "Conv2d" and child.kernel_size == (1, 1)):
                dotted = f"{prefix}.{path_prefix}{name}.{child_name}"
                found.append((dotted.replace(".", "_"), child))
    return found


def _shapes(module: torch.nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(module, torch.nn.Conv2d):
        return (rank, module.in_channels, 1, 1), (module.out_channels, rank, 1, 1)
    return (rank, module.in_features), (module.out_features, rank)


def _sgm_named(unet: Any) -> list[tuple[str, torch.nn.Module]]:
    """The UNet's kohya modules under the original (sgm) UNet's block names."""
    from sdtui.devtools.tiny_model import _unet_prefix_map

    pairs = [(d.replace(".", "_"), o.replace(".", "_"))
             for o, d in _unet_prefix_map(unet.config)]
    named = []
    for name, module in kohya_modules(unet, UNET_PREFIX, UNET_TARGETS):
        inner = name.removeprefix(UNET_PREFIX + "_")
        for diffusers_prefix, original in pairs:
            if inner.startswith(diffusers_prefix):
                inner = original + inner.removeprefix(diffusers_prefix)
                break
        named.append((f"{UNET_PREFIX}_{inner}", module))
    return named


def lora_state_dict(unet: torch.nn.Module, text_encoder: torch.nn.Module, rank: int = 4,
                    alpha: float = 4.0, seed: int = 0, scale: float = 0.5,
                    text_encoder_2: torch.nn.Module | None = None,
                    ) -> dict[str, torch.Tensor]:
    """Random LoRA weights for every module kohya wraps. `lora_up` is not zero (as a freshly
    initialised kohya network's is), so the LoRA changes the image. With a second text encoder
    (SDXL) the names are kohya's SDXL ones."""
    generator = torch.Generator().manual_seed(seed)
    # transformers 5 dropped CLIPTextModel's `text_model` wrapper; the files keep its name.
    te_path = "" if hasattr(text_encoder, "text_model") else "text_model."
    if text_encoder_2 is None:
        modules = (kohya_modules(text_encoder, TEXT_ENCODER_PREFIX, TEXT_ENCODER_TARGETS,
                                 te_path)
                   + kohya_modules(unet, UNET_PREFIX, UNET_TARGETS))
    else:
        modules = [
            *kohya_modules(text_encoder, TEXT_ENCODER_PREFIX + "1", TEXT_ENCODER_TARGETS,
                           te_path),
            *kohya_modules(text_encoder_2, TEXT_ENCODER_PREFIX + "2", TEXT_ENCODER_TARGETS,
                           "" if hasattr(text_encoder_2, "text_model") else "text_model."),
            *_sgm_named(unet)]
    return random_lora(modules, rank, alpha, generator, scale)


def random_lora(modules: list[tuple[str, torch.nn.Module]], rank: int, alpha: float,
                generator: torch.Generator, scale: float) -> dict[str, torch.Tensor]:
    """kohya's three tensors for each (name, module), random."""
    state = {}
    for name, module in modules:
        down, up = _shapes(module, rank)
        state[f"{name}.lora_down.weight"] = torch.randn(down, generator=generator) * scale
        state[f"{name}.lora_up.weight"] = torch.randn(up, generator=generator) * scale
        state[f"{name}.alpha"] = torch.tensor(float(alpha))
    return state


def kohya_metadata(family: str, rank: int, alpha: float) -> dict[str, str]:
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_v2": str(family == "sd2"),
        "ss_output_name": "tiny-lora",
    }


def write_tiny_lora(model: Path, out: Path, rank: int = 4, seed: int = 0,
                    family: str | None = None) -> Path:
    """A LoRA for the tiny model at `model` (a diffusers folder), written to `out`."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from sdtui.worker.families import detect_folder

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out} must end in .safetensors")
    family = family or detect_folder(Path(model)).id
    unet: Any = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    text_encoder: Any = CLIPTextModel.from_pretrained(model, subfolder="text_encoder")
    text_encoder_2: Any = (CLIPTextModelWithProjection.from_pretrained(
        model, subfolder="text_encoder_2") if family == "sdxl" else None)
    state = lora_state_dict(unet, text_encoder, rank=rank, alpha=float(rank), seed=seed,
                            text_encoder_2=text_encoder_2)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out,
              metadata=kohya_metadata(family, rank, float(rank)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a tiny model's diffusers folder")
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        print(write_tiny_lora(args.model, args.out, rank=args.rank, seed=args.seed))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
