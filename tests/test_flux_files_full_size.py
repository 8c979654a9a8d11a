"""The configurations sdtui derives from the tensors' shapes, checked on the released models'
full-size layouts (built on the meta device, so they cost no memory): BFL's own FLUX.1 [dev]
and [schnell] and autoencoder parameters (black-forest-labs/flux src/flux/util.py), CLIP-L and
T5-XXL as transformers builds them. Each derived model has the reference's parameter count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdtui.worker.families.base import ASSETS
from sdtui.worker.flux_files import CONFIG, transformer_config
from sdtui.worker.flux_parts import clip_config, t5_config, vae_config
from tests.helpers_flux_files import bfl, flux_params

FILE = Path("model.safetensors")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + key: tuple(value.shape) for key, value in module.state_dict().items()}


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_flux1_transformer_config_from_bfls_released_shapes(guidance: bool) -> None:
    from diffusers import FluxTransformer2DModel

    # black-forest-labs/flux src/flux/util.py: configs["flux-dev"] / ["flux-schnell"].params
    params = flux_params(guidance, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                         num_heads=24, depth=19, depth_single_blocks=38)
    with torch.device("meta"):
        reference = bfl().Flux(params)
        config = transformer_config(FILE, _shapes(reference), json.loads(CONFIG.read_text()))
        derived = FluxTransformer2DModel(**config)
    shipped = {k: v for k, v in json.loads(CONFIG.read_text()).items() if k != "_class_name"}
    assert config == {**shipped, "out_channels": 64, "guidance_embeds": guidance}
    assert _count(derived) == _count(reference)


def test_clip_l_config_from_its_released_shapes() -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    released = json.loads((ASSETS / "sd1" / "text_encoder" / "config.json").read_text())
    with torch.device("meta"):
        reference = CLIPTextModel(CLIPTextConfig(**released))
        config = clip_config(FILE, _shapes(reference, "text_model."))  # clip_l.safetensors' keys
        derived = CLIPTextModel(CLIPTextConfig(**config))
    assert {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "vocab_size", "hidden_act")} == {
        k: released[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "vocab_size", "hidden_act")}
    assert _count(derived) == _count(reference) == 123_060_480


def test_t5_xxl_config_from_its_released_shapes() -> None:
    from transformers import T5Config, T5EncoderModel

    # google/t5-v1_1-xxl's config.json, as FLUX.1's text_encoder_2 carries it.
    released = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
                "vocab_size": 32128, "relative_attention_num_buckets": 32,
                "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    with torch.device("meta"):
        reference = T5EncoderModel(T5Config(**released))
        shapes = {k: v for k, v in _shapes(reference).items()
                  if k != "encoder.embed_tokens.weight"}  # t5xxl_*.safetensors' keys
        config = t5_config(FILE, shapes)
        derived = T5EncoderModel(T5Config(**config))
    assert {k: config[k] for k in released} == released
    assert _count(derived) == _count(reference)


def test_ae_config_from_bfls_released_shapes() -> None:
    from diffusers import AutoencoderKL

    bfl()
    from flux.modules.autoencoder import AutoEncoder, AutoEncoderParams

    # black-forest-labs/flux src/flux/util.py: ae_params
    params = AutoEncoderParams(resolution=256, in_channels=3, ch=128, out_ch=3,
                               ch_mult=[1, 2, 4, 4], num_res_blocks=2, z_channels=16,
                               scale_factor=0.3611, shift_factor=0.1159)
    with torch.device("meta"):
        reference = AutoEncoder(params)
        config = vae_config(FILE, _shapes(reference))
        derived = AutoencoderKL(**config)
    assert config["block_out_channels"] == [128, 256, 512, 512]
    assert config["latent_channels"] == 16 and config["layers_per_block"] == 2
    assert (config["scaling_factor"], config["shift_factor"]) == (0.3611, 0.1159)
    assert _count(derived) == _count(reference)
