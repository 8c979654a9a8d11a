"""The worker copies unaligned weights into aligned memory (sdtui.worker.aligned) and hands the
copied weights' pages of a mapped file back to the kernel, so a folder's weights are not held
twice; data anything else still shares is never lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.models.model_loading_utils import load_state_dict
from safetensors.torch import save_file

from sdtui.worker.aligned import ALIGNMENT, align_weights


class Pipe:
    def __init__(self, **components: Any) -> None:
        self.components = components


def holding(weight: torch.Tensor) -> torch.nn.Module:
    module = torch.nn.Module()
    module.register_parameter("weight", torch.nn.Parameter(weight, requires_grad=False))
    return module


def resident_kib(address: int) -> int:
    """This process's resident KiB of the mapping that holds `address` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's first line
            low, high = (int(part, 16) for part in fields[0].split("-"))
            inside = low <= address < high
        elif inside and fields[0] == "Rss:":
            return int(fields[1])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_a_weight_copied_out_of_a_mapped_file_leaves_its_pages(tmp_path) -> None:
    # A 3-element tensor first puts the large one at an unaligned offset, as in a real file.
    save_file({"a": torch.ones(3), "b": torch.randn(2048, 1024)}, tmp_path / "w.safetensors")
    weight = load_state_dict(str(tmp_path / "w.safetensors"))["b"]  # diffusers' own mmap
    address = weight.data_ptr()
    assert address % ALIGNMENT, "the test needs an unaligned weight"
    expected = weight.clone()  # reads every page of the weight
    assert resident_kib(address) >= 8 * 1024 * 0.9
    module = holding(weight)
    align_weights(Pipe(transformer=module))
    assert module.weight.data_ptr() % ALIGNMENT == 0 and torch.equal(module.weight, expected)
    assert resident_kib(address) <= 64, "the copied weight's file pages are still held"
    assert torch.equal(weight, expected)  # the old view reads the file again, unchanged


def test_weights_that_share_memory_keep_their_values() -> None:
    # Two views of the same anonymous memory (tied weights): copying one must not take the
    # other's bytes away, as discarding the pages (MADV_DONTNEED) would.
    memory = torch.arange(1 + 512 * 1024, dtype=torch.float32)
    first, tied = memory[1:], memory[1:]
    assert first.data_ptr() % ALIGNMENT
    module = holding(first)
    align_weights(Pipe(text_encoder=module, tokenizer=object()))
    assert module.weight.data_ptr() % ALIGNMENT == 0
    assert torch.equal(tied, torch.arange(1, 1 + 512 * 1024, dtype=torch.float32))
    assert torch.equal(module.weight, tied)
