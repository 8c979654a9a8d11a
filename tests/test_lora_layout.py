"""The tiny LoRA files sdtui.devtools writes have the real kohya/A1111 layout: the same keys and
shapes as kohya's own sd-scripts LoRANetwork builds for the tiny model, and diffusers' kohya
converter maps every one of them onto a module of the model."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from transformers import CLIPTextModel
from vendor_loader import load_vendored

from sdtui.devtools.tiny_lora import write_tiny_lora

KOHYA_LORA = Path(__file__).parent / "vendor" / "kohya_sd_scripts" / "lora.py"


def kohya_networks_lora() -> types.ModuleType:
    """sd-scripts' networks/lora.py, with the two sd-scripts modules it imports stubbed (only
    the SDXL path uses them)."""
    library = types.ModuleType("library")
    utils = types.ModuleType("library.utils")
    utils.setup_logging = lambda *args, **kwargs: None
    sdxl_unet = types.ModuleType("library.sdxl_original_unet")
    sdxl_unet.SdxlUNet2DConditionModel = type("SdxlUNet2DConditionModel", (), {})
    return load_vendored("kohya_networks_lora", KOHYA_LORA, {
        "library": library, "library.utils": utils, "library.sdxl_original_unet": sdxl_unet})


class _CLIPTextModelAsTrained(torch.nn.Module):
    """transformers' CLIPTextModel as it was when LoRA files were trained: its modules under
    `text_model.` (transformers 5 dropped that wrapper)."""

    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_model = text_encoder


@pytest.fixture(scope="module")
def tiny_lora(tiny_diffusers, tmp_path_factory) -> Path:
    return write_tiny_lora(tiny_diffusers, tmp_path_factory.mktemp("loras") / "tiny.safetensors")


def written(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(path, "pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118


def test_keys_and_shapes_are_kohyas_own(tiny_diffusers, tiny_lora):
    unet = UNet2DConditionModel.from_pretrained(tiny_diffusers, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(tiny_diffusers, subfolder="text_encoder")
    if not hasattr(text_encoder, "text_model"):
        text_encoder = _CLIPTextModelAsTrained(text_encoder)
    kohya = kohya_networks_lora()
    network = kohya.LoRANetwork(text_encoder, unet, lora_dim=4, alpha=4)
    network.apply_to(text_encoder, unet)
    expected = {key: tuple(t.shape) for key, t in network.state_dict().items()}
    assert len(expected) > 100  # every attention and MLP projection of both models
    assert written(tiny_lora) == expected


def test_diffusers_converter_maps_every_layer(tiny_diffusers, tiny_lora):
    from safetensors.torch import load_file

    pipe = StableDiffusionPipeline.from_pretrained(tiny_diffusers, safety_checker=None,
                                                   requires_safety_checker=False)
    kohya = load_file(tiny_lora)
    pipe.load_lora_weights(dict(kohya), adapter_name="tiny")
    from peft.tuners.lora import LoraLayer

    wrapped = [m for component in (pipe.unet, pipe.text_encoder)
               for m in component.modules() if isinstance(m, LoraLayer)]
    assert len(wrapped) == sum(key.endswith(".lora_down.weight") for key in kohya)
    q_proj = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"
    layer = next(m for n, m in pipe.text_encoder.named_modules()
                 if n.endswith("layers.0.self_attn.q_proj"))
    assert torch.equal(layer.lora_A["tiny"].weight, kohya[q_proj])
