"""sdtui reads a .gguf in one sequential pass instead of through diffusers'
load_gguf_checkpoint (which copies each tensor out of a memory map, holding twice the file at
its peak: bench/bench_load.py), and must give exactly what that function gives: the same
names, GGUFParameter for quantized tensors with the same quantization type, plain tensors for
F16/F32, the same shapes, dtypes and bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdtui.worker.gguf_files import read_gguf
from tests.helpers_flux_files import bfl_flux, gguf, state_dict, write_gguf


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_sdtuis_gguf_reader_gives_what_diffusers_load_gguf_checkpoint_gives(
        tmp_path: Path, qtype: str) -> None:
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    path = write_gguf(state_dict(bfl_flux(guidance=True)), tmp_path / f"flux1-{qtype}.gguf",
                      getattr(gguf().GGMLQuantizationType, qtype))
    ours, shapes = read_gguf(path, "flux", "a FLUX.1 transformer", "FLUX.1")
    theirs = load_gguf_checkpoint(str(path))

    assert set(ours) == set(theirs) == set(shapes)
    for name, expected in theirs.items():
        got = ours[name]
        assert type(got) is type(expected), name
        assert getattr(got, "quant_type", None) == getattr(expected, "quant_type", None), name
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), name
        assert torch.equal(torch.Tensor.as_subclass(got, torch.Tensor),
                           torch.Tensor.as_subclass(expected, torch.Tensor)), name
