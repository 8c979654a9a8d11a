"""Reading a .gguf model file (llama.cpp's format, as city96's ComfyUI-GGUF writes diffusion
models) with the `gguf` package, llama.cpp's own reader.

The tensors stay as stored: quantized ones become diffusers' GGUFParameter (raw blocks plus
their quantization type), which diffusers' GGUFLinear dequantizes one layer at a time while
computing; F16 and F32 ones are plain tensors. No pickle is involved anywhere in the format.

diffusers' GGUFLinear dequantizes in float16 whatever the compute dtype (every weight is
rounded to float16 once more on the way); llama.cpp and the gguf package dequantize in float32.
exact_dequantization() makes a loaded model's GGUF layers dequantize as they do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdtui.headers import once
from sdtui.worker.checkpoint import ModelInvalid

ARCHITECTURE_KEY = "general.architecture"


def reader(path: Path) -> Any:
    """The gguf package's reader of the file (its tensor infos; the data stays unread), made
    once within sdtui.headers.read_once()."""
    from gguf import GGUFReader

    try:
        return once("gguf reader", path, lambda: GGUFReader(path))
    except (ValueError, OSError, IndexError, KeyError) as error:
        raise ModelInvalid(f"model file {path} is not a readable GGUF file (truncated or "
                           f"corrupt?): {type(error).__name__}") from None


def architecture(reader: Any) -> str:
    field = reader.get_field(ARCHITECTURE_KEY)
    return field.contents() if field is not None else ""


def read_architecture(path: Path, expected: str, what: str,
                      runs: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape as the model sees it (a quantized tensor's own shape counts bytes),
    by name, of a GGUF whose architecture is `expected`. Any other architecture is refused
    naming it (`what` says what sdtui wanted, `runs` what it runs as GGUF)."""
    opened = reader(path)
    found = architecture(opened)
    if found != expected:
        raise ModelInvalid(f"model file {path} is a GGUF of architecture "
                           f"{found or '(none named)'!r}, not {what}; sdtui runs {runs}")
    # GGUF lists dimensions innermost first.
    return {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in opened.tensors}


def read_gguf(path: Path, expected: str, what: str,
              runs: str) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The tensors of a GGUF whose architecture is `expected` as stored (see
    read_architecture), and their shapes: what diffusers' load_gguf_checkpoint gives (quantized
    tensors as GGUFParameter, F16/F32 as plain tensors), read in one sequential pass straight
    into the tensors the model keeps. (load_gguf_checkpoint copies each tensor out of a memory
    map of the file, so the mapped pages and the copies together held twice the file.)"""
    import numpy as np
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES, GGUFParameter
    from gguf import GGMLQuantizationType

    from sdtui.worker.checkpoint import _read_into

    shapes = read_architecture(path, expected, what, runs)
    plain = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
    infos = sorted(reader(path).tensors, key=lambda info: int(info.data_offset))
    for info in infos:
        if info.tensor_type not in plain and info.tensor_type not in SUPPORTED_GGUF_QUANT_TYPES:
            raise ModelInvalid(f"model file {path}: {info.name} has a quantization type: "
                               f"{info.tensor_type!s} which is unsupported.")
    state: dict[str, Any] = {}
    with open(path, "rb", buffering=0) as f:
        for info in infos:
            # The memory map's shape and dtype, without touching its pages.
            values = np.empty(info.data.shape, dtype=info.data.dtype)
            f.seek(int(info.data_offset))
            _read_into(f, torch.from_numpy(values.reshape(-1).view(np.uint8)), path, info.name)
            tensor = torch.from_numpy(values)
            state[info.name] = (tensor if info.tensor_type in plain
                                else GGUFParameter(tensor, quant_type=info.tensor_type))
    return state, shapes


def dequantize(weight: Any) -> torch.Tensor:
    """A GGUFParameter's values in float32, as gguf.quants.dequantize computes them (diffusers'
    own block formulas, run in float32); a plain tensor as it is."""
    from diffusers.quantizers.gguf.utils import (
        GGML_QUANT_SIZES,
        _quant_shape_from_byte_shape,
        dequantize_functions,
    )

    if not hasattr(weight, "quant_type"):
        return weight
    block_size, type_size = GGML_QUANT_SIZES[weight.quant_type]
    raw = weight.as_tensor().view(torch.uint8)
    shape = _quant_shape_from_byte_shape(raw.shape, type_size, block_size)
    blocks = raw.reshape(-1, type_size)
    values = dequantize_functions[weight.quant_type](blocks, block_size, type_size,
                                                     dtype=torch.float32)
    return values.reshape(shape)


def exact_dequantization(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with each of diffusers' GGUF linears dequantizing in float32, then casting to
    its compute dtype."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    class ExactGGUFLinear(GGUFLinear):
        def forward_native(self, inputs: torch.Tensor) -> torch.Tensor:
            weight = dequantize(self.weight).to(self.compute_dtype)
            bias = self.bias.to(self.compute_dtype) if self.bias is not None else None
            return torch.nn.functional.linear(inputs, weight, bias)

    for module in model.modules():
        if type(module) is GGUFLinear:
            module.__class__ = ExactGGUFLinear
    return model
