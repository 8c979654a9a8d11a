"""A FLUX.2 transformer file alone (BFL's `flux-2-klein-4b.safetensors`, ComfyUI's
diffusion_models/ copy) shares FLUX.1's block names: beside FLUX.1's parts it is a FLUX.2 Klein
set missing its own, named in one line before anything is created, not taken for FLUX.1."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sdtui.errors import BadInput
from sdtui.modelfiles import detect_format


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_a_flux2_transformer_beside_flux1_parts_is_a_klein_set_missing_its_own(tmp_path,
                                                                              prefix):
    # The keys diffusers' own single-file loader tells FLUX.2 by, beside BFL's block names.
    state = {f"{prefix}double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2),
             f"{prefix}single_stream_modulation.lin.weight": torch.zeros(6, 2)}
    path = tmp_path / "flux-2-klein-4b.safetensors"
    save_file(state, path)
    for name in ("ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"):
        save_file({"x": torch.zeros(1)}, tmp_path / name)  # a FLUX.1 set's other parts
    with pytest.raises(BadInput) as refused:
        detect_format(path)
    message = f"{refused.value} ({refused.value.fix})"
    assert f"FLUX.2 Klein model set {tmp_path} has no Qwen3 text encoder" in message
    assert "qwen_3_4b.safetensors" in message and "\n" not in message
    assert refused.value.exit_code == 2
