"""Write a full-size, random-weight checkpoint of a family in its released single-file layout,
for benchmarks and full-size checks (SD 1.5: 1.07 B parameters, 4.3 GB in float32).

    python -m sdtui.devtools.random_checkpoint OUT.safetensors|OUT.ckpt [--family sd1|sd2|sdxl]
        [--dtype float32|float16] [--seed N]

The layout is the one sdtui.devtools.tiny_model writes (checked against diffusers' own
converters by the tests), at the shipped configs' full size. The model is built on the meta
device and each tensor is drawn from a seeded generator as it is written, so a .safetensors
file never exists in memory; a .ckpt (torch.save) holds it once.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sdtui.devtools.tiny_model import original_state_dict
from sdtui.worker.families import FAMILIES

SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                     torch.int64: "I64"}


def full_size_layout(family: str, inpainting: bool = False) -> dict[str, torch.Tensor]:
    """The family's released key layout at full size, as meta tensors (no memory)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = FAMILIES[family]
    with torch.device("meta"):
        pipe = type("Pipe", (), {})()
        unet = diffusers.UNet2DConditionModel.load_config(spec.assets / "unet")
        pipe.unet = diffusers.UNet2DConditionModel.from_config(
            {**unet, "in_channels": 9} if inpainting else unet)
        pipe.vae = diffusers.AutoencoderKL.from_config(
            diffusers.AutoencoderKL.load_config(spec.assets / "vae"))
        for encoder in spec.text_encoders:
            cls = CLIPTextModelWithProjection if encoder.with_projection else CLIPTextModel
            setattr(pipe, encoder.name,
                    cls(CLIPTextConfig.from_pretrained(spec.assets / encoder.name)))
        return original_state_dict(pipe, family)


def random_tensors(layout: dict[str, torch.Tensor], dtype: torch.dtype,
                   seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor of `layout` with random values, in name order, one at a time."""
    generator = torch.Generator().manual_seed(seed)
    for name in sorted(layout):
        meta = layout[name]
        if not meta.is_floating_point():
            yield name, torch.zeros(meta.shape, dtype=meta.dtype)
            continue
        yield name, (torch.randn(meta.shape, generator=generator) * 0.02).to(dtype)


def write_safetensors(tensors: Iterator[tuple[str, torch.Tensor]],
                      layout: dict[str, torch.Tensor], dtype: torch.dtype, out: Path) -> None:
    """The .safetensors format written tensor by tensor: the header first (from the layout's
    shapes), then each tensor's bytes as it is made."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(layout):
        meta = layout[name]
        kind = dtype if meta.is_floating_point() else meta.dtype
        size = meta.numel() * kind.itemsize
        header[name] = {"dtype": SAFETENSORS_NAMES[kind], "shape": list(meta.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, tensor in tensors:
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def write_random_checkpoint(out: Path, family: str = "sd1", dtype: torch.dtype = torch.float32,
                            seed: int = 0, layout: dict[str, torch.Tensor] | None = None) -> Path:
    out = Path(out)
    layout = layout if layout is not None else full_size_layout(family)
    tensors = random_tensors(layout, dtype, seed)
    if out.suffix == ".safetensors":
        write_safetensors(tensors, layout, dtype, out)
    elif out.suffix == ".ckpt":
        torch.save({"state_dict": dict(tensors), "global_step": 0}, out)
    else:
        raise ValueError(f"{out} must end in .safetensors or .ckpt")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    # The UNet families' released layouts; FLUX.1's are another writer's.
    parser.add_argument("--family", default="sd1",
                        choices=tuple(f for f, spec in FAMILIES.items() if spec.denoiser == "unet"))
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        print(write_random_checkpoint(args.out, args.family, getattr(torch, args.dtype),
                                      args.seed))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
