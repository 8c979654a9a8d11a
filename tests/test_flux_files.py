"""FLUX.1 transformers in BFL's original single-file layout load in sdtui and compute what BFL's
own reference implementation computes (tests/vendor/flux_bfl, black-forest-labs/flux)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdtui.worker.checkpoint import ModelInvalid
from sdtui.worker.flux_files import is_flux_layout, load_transformer
from tests.helpers_flux_files import (
    bfl_flux,
    diffusers_forward,
    inputs,
    reference_forward,
    state_dict,
)

# fp32 on the CPU: the two implementations differ only in the order of float operations.
ATOL = 1e-5


@pytest.mark.parametrize("variant", ["schnell", "dev"])
def test_original_layout_computes_what_bfl_computes(tmp_path: Path, variant: str) -> None:
    flux = bfl_flux(guidance=variant == "dev")
    path = tmp_path / f"flux1-{variant}.safetensors"
    save_file(state_dict(flux), path)

    transformer = load_transformer(path, torch.float32, "safetensors")

    assert transformer.config.guidance_embeds == (variant == "dev")
    x = inputs()
    expected = reference_forward(flux, x)
    got = diffusers_forward(transformer, x)
    assert expected.abs().max() > 0.5  # a real signal, not zeros
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_transformer_inside_an_all_in_one_file_loads(tmp_path: Path) -> None:
    """The same keys under model.diffusion_model., beside other components' tensors."""
    flux = bfl_flux(guidance=True)
    state = {"model.diffusion_model." + key: value for key, value in state_dict(flux).items()}
    state["text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    path = tmp_path / "flux1-dev-aio.safetensors"
    save_file(state, path)
    assert is_flux_layout(state)

    transformer = load_transformer(path, torch.float32, "safetensors")

    x = inputs()
    torch.testing.assert_close(diffusers_forward(transformer, x), reference_forward(flux, x),
                               atol=ATOL, rtol=0)


def test_fp8_stored_weights_are_upcast_to_the_compute_dtype(tmp_path: Path) -> None:
    flux = bfl_flux(guidance=False)
    stored = {key: value.to(torch.float8_e4m3fn) if value.ndim > 1 else value
              for key, value in state_dict(flux).items()}
    path = tmp_path / "flux1-schnell-fp8_e4m3fn.safetensors"
    save_file(stored, path)

    transformer = load_transformer(path, torch.float32, "safetensors")

    assert {p.dtype for p in transformer.parameters()} == {torch.float32}
    # The reference holds the same fp8-rounded weights, upcast.
    flux.load_state_dict({key: value.float() for key, value in stored.items()})
    x = inputs()
    torch.testing.assert_close(diffusers_forward(transformer, x), reference_forward(flux, x),
                               atol=ATOL, rtol=0)


def test_a_file_without_a_flux_transformer_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "clip_l.safetensors"
    save_file({"text_model.final_layer_norm.weight": torch.ones(8)}, path)
    with pytest.raises(ModelInvalid) as caught:
        load_transformer(path, torch.float32, "safetensors")
    assert str(path) in str(caught.value) and "no FLUX.1 transformer" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_narrow_heads_need_their_config_beside_the_file(tmp_path: Path) -> None:
    """Rotary axes are not in the weights: FLUX.1's own unless a sidecar config says."""
    flux = bfl_flux(guidance=False, vec_in_dim=32, context_in_dim=32, hidden_size=32,
                    axes_dim=[4, 4, 8])
    path = tmp_path / "narrow.safetensors"
    save_file(state_dict(flux), path)
    with pytest.raises(ModelInvalid, match=r"narrow\.config/transformer/") as caught:
        load_transformer(path, torch.float32, "safetensors")
    assert "\n" not in str(caught.value)

    sidecar = tmp_path / "narrow.config" / "transformer"
    sidecar.mkdir(parents=True)
    (sidecar / "config.json").write_text('{"axes_dims_rope": [4, 4, 8]}')
    transformer = load_transformer(path, torch.float32, "safetensors")
    x = inputs()
    x["txt"], x["y"] = x["txt"][..., :32], x["y"][..., :32]
    torch.testing.assert_close(diffusers_forward(transformer, x), reference_forward(flux, x),
                               atol=ATOL, rtol=0)
