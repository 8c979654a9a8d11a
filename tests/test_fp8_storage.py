"""A t5xxl_fp8_e4m3fn.safetensors stays fp8 in memory (issue 17: fp8-stored weights are upcast
per layer; upcast whole at load it held twice its file in bfloat16, which bench_load.py
showed), and computes bit for bit what transformers' own T5EncoderModel.from_pretrained
computes with the same weights upcast at load, in every compute dtype the worker uses (float16
keeps T5's `wo` in float32, as transformers does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdtui.worker.flux_parts import t5_encoder
from tests.helpers_flux_files import comfy_t5, tiny_t5

IDS = torch.tensor([[4, 8, 15, 16, 23, 1]])


@pytest.fixture(scope="module")
def fp8_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t5") / "t5xxl_fp8_e4m3fn.safetensors"
    save_file(comfy_t5(tiny_t5(), torch.float8_e4m3fn), path)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
def test_an_fp8_t5_keeps_its_matrices_fp8_and_computes_what_transformers_computes(
        fp8_file: Path, dtype: torch.dtype) -> None:
    from transformers import T5EncoderModel

    from sdtui.worker.checkpoint import Checkpoint

    ours = t5_encoder(fp8_file, dtype)
    upcast = {key: value.to(dtype) for key, value in
              Checkpoint(fp8_file, "safetensors").read(lambda key: True, torch.float32).items()}
    reference = T5EncoderModel.from_pretrained(None, config=tiny_t5().config, state_dict=upcast,
                                               dtype=dtype).eval()

    matrices = {name: p.dtype for name, p in ours.named_parameters()
                if p.ndim > 1 and name != "shared.weight"}
    assert set(matrices.values()) == {torch.float8_e4m3fn}, matrices
    with torch.no_grad():
        got = ours(IDS).last_hidden_state
        expected = reference(IDS).last_hidden_state
        again = ours(IDS).last_hidden_state  # the fp8 storage is back after each block
    assert got.dtype == expected.dtype == dtype
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert torch.equal(again, got)
    assert {p.dtype for p in ours.parameters() if p.ndim > 1} - {dtype} == {torch.float8_e4m3fn}
