"""fp8-stored weights kept as stored in memory and upcast one block at a time while it computes
(issue 17: "fp8-stored weights are upcast per layer"). A t5xxl_fp8_e4m3fn.safetensors upcast
whole at load holds twice its file in RAM (bfloat16) or four times (float32); kept in fp8, the
encoder holds about its file.

float8_e4m3fn values are exact in float16, bfloat16 and float32, so upcasting per block gives
the very weights an upcast at load gives: the outputs are the same bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8


def upcast_per_block(blocks: Iterable[torch.nn.Module], dtype: torch.dtype,
                     keep_fp32: tuple[str, ...] = ()) -> None:
    """While a block runs, its fp8 parameters hold `dtype` copies (float32 for those whose
    name ends in one of `keep_fp32`); afterwards their fp8 storage again. Parameters stay on
    whatever device the module is moved to."""
    for block in blocks:
        held: dict[str, torch.Tensor] = {}

        def before(module: torch.nn.Module, args: object, held: dict = held) -> None:
            for name, param in module.named_parameters():
                if is_fp8(param.dtype):
                    held[name] = param.data
                    kind = torch.float32 if name.endswith(keep_fp32) else dtype
                    param.data = param.data.to(kind)

        def after(module: torch.nn.Module, args: object, output: object,
                  held: dict = held) -> None:
            for name, param in module.named_parameters():
                if name in held:
                    param.data = held.pop(name)

        block.register_forward_pre_hook(before)
        block.register_forward_hook(after, always_call=True)  # a failed step restores too
