"""FLUX.1's transformer from the single files people have, built by diffusers' own code:

- BFL's original layout (`flux1-schnell.safetensors`, `flux1-dev.safetensors`: double_blocks,
  single_blocks, img_in, txt_in, time_in, vector_in, guidance_in for [dev], final_layer), read
  by sdtui's safetensors reader (no pickle; fp8-stored weights upcast tensor by tensor);
- the same keys under `model.diffusion_model.` (the transformer inside an all-in-one file);
- a `.gguf` in city96's ComfyUI-GGUF layout (architecture `flux`, BFL's tensor names), whose
  weights stay quantized: diffusers' GGUFLinear dequantizes one layer at a time as it computes.

diffusers' converter maps the keys. Its configuration comes from the tensors' shapes; only the
rotary axes cannot be seen in the weights: FLUX.1's own (16, 56, 56) unless a
`S.config/transformer/config.json` sidecar beside the file says otherwise.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from sdtui.worker.checkpoint import Checkpoint, ModelInvalid
from sdtui.worker.families.base import ASSETS

ORIGINAL_PREFIX = "model.diffusion_model."
MARKER = "double_blocks.0.img_attn.qkv.weight"
GGUF_ARCHITECTURE = "flux"  # what ComfyUI-GGUF's tools/convert.py writes for FLUX.1
CONFIG = ASSETS / "flux1" / "transformer" / "config.json"
# diffusers' converter assumes FLUX.1's width, as every released FLUX.1 file has.
FLUX1_WIDTH = 3072


def is_flux_layout(keys: Mapping[str, Any]) -> bool:
    """BFL's key layout, alone or under the all-in-one prefix."""
    return MARKER in keys or ORIGINAL_PREFIX + MARKER in keys


def _unprefixed(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {key.removeprefix(ORIGINAL_PREFIX): shape for key, shape in shapes.items()
            if not key.startswith(ORIGINAL_PREFIX) or MARKER not in shapes}


def count_blocks(shapes: Mapping[str, Any], name: str) -> int:
    return 1 + max((int(key.split(".")[1]) for key in shapes if key.startswith(name + ".")),
                   default=-1)


def bfl_config(path: Path, shapes: Mapping[str, tuple[int, ...]], base: Mapping[str, Any],
               family: tuple[str, str, str],
               own: Callable[[Mapping[str, tuple[int, ...]], int], dict[str, Any]]
               ) -> dict[str, Any]:
    """The diffusers config of a transformer in BFL's block layout (FLUX.1's and FLUX.2's) from
    its unprefixed shapes: what both share, then `own(shapes, width)`; the rotary axes from
    `base`. `family` is (id, label, what a file lacking a key lacks)."""
    family_id, label, lacks = family
    try:
        width, in_channels = shapes["img_in.weight"]
        head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
        config = {
            "patch_size": 1,
            "in_channels": in_channels,
            "out_channels": shapes["final_layer.linear.weight"][0],
            "num_layers": count_blocks(shapes, "double_blocks"),
            "num_single_layers": count_blocks(shapes, "single_blocks"),
            "attention_head_dim": head_dim,
            "num_attention_heads": width // head_dim,
            "joint_attention_dim": shapes["txt_in.weight"][1],
            "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
            **own(shapes, width),
        }
    except (KeyError, ValueError, IndexError, ZeroDivisionError):
        raise ModelInvalid(f"model file {path} is an incomplete {label} transformer: it lacks "
                           f"{lacks}", family=family_id) from None
    axes = list(base.get("axes_dims_rope", ()))
    if sum(axes) != head_dim:
        raise ModelInvalid(
            f"model file {path}: its attention heads are {head_dim} wide but the rotary axes "
            f"{axes} sum to {sum(axes)}; put the transformer's diffusers config.json in "
            f"{path.stem}.config/transformer/ beside it", family=family_id)
    return {**config, "axes_dims_rope": axes}


def transformer_config(path: Path, shapes: Mapping[str, tuple[int, ...]],
                       base: Mapping[str, Any]) -> dict[str, Any]:
    """The diffusers config of the FLUX.1 transformer these (unquantized) shapes describe."""
    return bfl_config(
        path, _unprefixed(shapes), base,
        ("flux1", "FLUX.1", "img_in, txt_in, vector_in, final_layer or a double block's norms"),
        lambda shapes, width: {"pooled_projection_dim": shapes["vector_in.in_layer.weight"][1]})


def converter(width: int) -> Any:
    """diffusers' convert_flux_transformer_checkpoint_to_diffusers for a transformer `width`
    wide: the function as diffusers ships it with its one FLUX.1-width constant replaced, so a
    narrower (test) transformer maps through the same code."""
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers as convert,
    )

    if width == FLUX1_WIDTH:
        return convert
    code = convert.__code__
    constants = tuple(width if c == FLUX1_WIDTH and type(c) is int else c
                      for c in code.co_consts)
    return types.FunctionType(code.replace(co_consts=constants), convert.__globals__,
                              convert.__name__)


def config_file(path: Path) -> Path:
    """A `S.config/transformer/config.json` sidecar beside the file, else FLUX.1's own."""
    sidecar = path.with_name(path.stem + ".config") / "transformer" / "config.json"
    return sidecar if sidecar.is_file() else CONFIG


def _base_config(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        raise ModelInvalid(f"{file} is not a readable JSON config") from None


def _gguf_state(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]], Any]:
    from diffusers import GGUFQuantizationConfig

    from sdtui.worker.gguf_files import read_gguf

    state, shapes = read_gguf(path, GGUF_ARCHITECTURE, "a FLUX.1 transformer",
                              "FLUX.1 transformers as GGUF (ComfyUI-GGUF's 'flux' layout)")
    return state, shapes, GGUFQuantizationConfig


def load_transformer(path: Path, dtype: torch.dtype, fmt: str) -> Any:
    """The FluxTransformer2DModel in `path` (fmt "safetensors" or "gguf"), computing in
    `dtype`."""
    from diffusers import FluxTransformer2DModel

    options: dict[str, Any] = {}
    if fmt == "gguf":
        state, shapes, quantization = _gguf_state(path)
        options["quantization_config"] = quantization(compute_dtype=dtype)
    else:
        checkpoint = Checkpoint(path, fmt)
        shapes = checkpoint.shapes
        if not is_flux_layout(shapes):
            raise ModelInvalid(f"model file {path} holds no FLUX.1 transformer (no "
                               f"{MARKER})")
        prefixed = MARKER not in shapes
        state = checkpoint.read(lambda key: key.startswith(ORIGINAL_PREFIX) == prefixed, dtype)
    base_file = config_file(path)
    config = transformer_config(path, shapes, _base_config(base_file))
    state = converter(shapes_width(shapes))(state)
    transformer = FluxTransformer2DModel.from_single_file(
        state, config=str(base_file), local_files_only=True, torch_dtype=dtype,
        **config, **options)
    if fmt == "gguf":
        from sdtui.worker.gguf_files import exact_dequantization

        exact_dequantization(transformer)
    return transformer


def shapes_width(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return _unprefixed(shapes)["img_in.weight"][0]
