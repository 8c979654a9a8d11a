"""FLUX.2 Klein's pipeline components from a split set (sdtui.modelsets), built by diffusers' and
transformers' own code:

- the transformer: BFL's `flux-2-klein-4b.safetensors` (double_blocks, single_blocks, img_in,
  txt_in, time_in, *_modulation, final_layer; ComfyUI's copy under `model.diffusion_model.`) or a
  `.gguf` of it in city96's ComfyUI-GGUF layout (architecture `flux`, BFL's tensor names), whose
  weights stay quantized; `Flux2Transformer2DModel.from_single_file` maps the keys with
  diffusers' `convert_flux2_transformer_checkpoint_to_diffusers`;
- the Qwen3 text encoder from `qwen_3_4b.safetensors` (transformers' Qwen3 keys, as ComfyUI
  keeps it; its tied output head need not be there);
- the VAE from `flux2-vae.safetensors` (BFL's autoencoder layout: the LDM one with the quant
  convs inside encoder and decoder, plus the latents' batch-norm statistics), mapped by
  diffusers' `convert_ldm_vae_checkpoint`;
- Qwen3's tokenizer from the transformer's `S.config/tokenizer/` sidecar.

Configurations come from the tensors' shapes; what the weights cannot say (the rotary axes, the
text encoder's rope and norm constants, the VAE's group norm) is FLUX.2 [klein] 4B's own unless
the sidecar holds `transformer/`, `text_encoder/` or `vae/config.json`. Whether the model is
[klein] (distilled: no CFG) or [klein] base comes from a sidecar `model_index.json`
(`is_distilled`), else from the transformer's name, as BFL names them
(`flux-2-klein-base-4b.safetensors`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sdtui.modelsets import ModelSet
from sdtui.worker.checkpoint import Checkpoint, ModelInvalid
from sdtui.worker.families.base import ASSETS, CFG, NO_GUIDANCE
from sdtui.worker.flux_files import bfl_config
from sdtui.worker.flux_parts import _count, _read, sidecar_config, vae_config

FAMILY = "flux2-klein"
PREFIX = "model.diffusion_model."
MARKER = "single_stream_modulation.lin.weight"
GGUF_ARCHITECTURE = "flux"  # ComfyUI-GGUF's for FLUX.2 as for FLUX.1
CONFIG = ASSETS / FAMILY / "transformer" / "config.json"
# Qwen/Qwen3-4B's config.json where the weights do not say.
QWEN3_4B = {"rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "rms_norm_eps": 1e-6, "max_position_embeddings": 40960, "hidden_act": "silu",
            "attention_bias": False}
QWEN_PREFIX = "model."
# BFL's FLUX.2 autoencoder keeps the quant convs inside encoder and decoder; the LDM layout
# diffusers' converter reads has them beside.
VAE_RENAMES = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}
VAE_STATISTICS = ("bn.running_mean", "bn.running_var")
VAE_GROUPS = 32  # black-forest-labs/FLUX.2-klein-4B vae/config.json
BASE_NAME = "base"


def _invalid(message: str) -> ModelInvalid:
    return ModelInvalid(message, family=FAMILY)


def transformer_config(path: Path, shapes: Mapping[str, tuple[int, ...]],
                       base: Mapping[str, Any]) -> dict[str, Any]:
    """Flux2Transformer2DModel's config from a transformer's (unprefixed) shapes; the rotary
    axes from `base`."""
    return bfl_config(
        path, shapes, base,
        (FAMILY, "FLUX.2", "img_in, txt_in, time_in, final_layer or a double block's norms or "
                           "MLP"),
        lambda shapes, width: {
            "timestep_guidance_channels": shapes["time_in.in_layer.weight"][1],
            # SwiGLU: the first projection makes the gate and the value.
            "mlp_ratio": shapes["double_blocks.0.img_mlp.0.weight"][0] / 2 / width})


def _base_config(path: Path) -> Path:
    sidecar = path.with_name(path.stem + ".config") / "transformer" / "config.json"
    return sidecar if sidecar.is_file() else CONFIG


def load_transformer(path: Path, dtype: torch.dtype, fmt: str) -> Any:
    """The Flux2Transformer2DModel in `path` (fmt "safetensors" or "gguf"), computing in
    `dtype`; a GGUF's weights stay quantized and dequantize as gguf.quants does."""
    from diffusers import Flux2Transformer2DModel, GGUFQuantizationConfig

    from sdtui.worker.gguf_files import exact_dequantization, read_gguf

    options: dict[str, Any] = {}
    if fmt == "gguf":
        state, shapes = read_gguf(path, GGUF_ARCHITECTURE, "a FLUX transformer",
                                  "FLUX.1 and FLUX.2 Klein transformers as GGUF "
                                  "(ComfyUI-GGUF's 'flux' layout)")
        options["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    else:
        checkpoint = Checkpoint(path, fmt)
        state, shapes = checkpoint.read(lambda key: True, dtype), checkpoint.shapes
    # diffusers' converter reads BFL's names alone; ComfyUI's copy has them under a prefix.
    state = {key.removeprefix(PREFIX): value for key, value in state.items()}
    shapes = {key.removeprefix(PREFIX): shape for key, shape in shapes.items()}
    if MARKER not in shapes:
        raise _invalid(f"model file {path} holds no FLUX.2 transformer (no {MARKER})")
    base = _base_config(path)
    try:
        config = transformer_config(path, shapes, json.loads(base.read_text()))
    except (OSError, ValueError):
        raise _invalid(f"{base} is not a readable JSON config") from None
    transformer = Flux2Transformer2DModel.from_single_file(
        state, config=str(base), local_files_only=True, torch_dtype=dtype, **config, **options)
    return exact_dequantization(transformer) if fmt == "gguf" else transformer.eval()


def qwen3_config(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """Qwen3's config from its (model.-prefixed) shapes; the rest is Qwen3-4B's."""
    layer = QWEN_PREFIX + "layers.0."
    try:
        vocab, hidden = shapes[QWEN_PREFIX + "embed_tokens.weight"]
        head_dim = shapes[layer + "self_attn.q_norm.weight"][0]
        return {**QWEN3_4B, "vocab_size": vocab, "hidden_size": hidden, "head_dim": head_dim,
                "intermediate_size": shapes[layer + "mlp.gate_proj.weight"][0],
                "num_hidden_layers": _count(shapes, QWEN_PREFIX + "layers."),
                "num_attention_heads": shapes[layer + "self_attn.q_proj.weight"][0] // head_dim,
                "num_key_value_heads": shapes[layer + "self_attn.k_proj.weight"][0] // head_dim,
                "tie_word_embeddings": "lm_head.weight" not in shapes}
    except (KeyError, ValueError, ZeroDivisionError):
        raise _invalid(f"model file {path} is not a Qwen3 text encoder in transformers' "
                       f"layout: it lacks {QWEN_PREFIX}embed_tokens or a layer's attention or "
                       "MLP") from None


def qwen3_encoder(path: Path, dtype: torch.dtype, overrides: dict[str, Any]) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    state, shapes = _read(path, dtype)
    if QWEN_PREFIX + "embed_tokens.weight" not in shapes:  # the bare model's keys
        state = {(k if k.startswith("lm_head.") else QWEN_PREFIX + k): v for k, v in state.items()}
        shapes = {(k if k.startswith("lm_head.") else QWEN_PREFIX + k): v
                  for k, v in shapes.items()}
    config = Qwen3Config.from_dict({**qwen3_config(path, shapes), **overrides})
    return Qwen3ForCausalLM.from_pretrained(None, config=config, state_dict=state,
                                            dtype=dtype).eval()


def vae(path: Path, dtype: torch.dtype, overrides: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKLFlux2
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    state, shapes = _read(path, dtype)
    missing = [key for key in VAE_STATISTICS if key not in state]
    if missing:
        raise _invalid(f"model file {path} is not a FLUX.2 VAE: it has no {', '.join(missing)} "
                       "(FLUX.1's ae.safetensors has none)")

    def renamed(key: str) -> str:
        for old, new in VAE_RENAMES.items():
            if key.startswith(old):
                return new + key.removeprefix(old)
        return key

    state = {renamed(key): value for key, value in state.items()}
    config = {key: value for key, value in vae_config(path, {renamed(k): v for k, v in
                                                            shapes.items()}).items()
              if key in inspect.signature(AutoencoderKLFlux2.__init__).parameters}
    config = {**config, "norm_num_groups": VAE_GROUPS, **overrides}
    model = AutoencoderKLFlux2.from_config(config)
    converted = convert_ldm_vae_checkpoint(state, config)
    converted.update({key: state[key] for key in VAE_STATISTICS})
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected or set(missing) - {"bn.num_batches_tracked"}:
        raise _invalid(f"model file {path} does not fit a FLUX.2 VAE: missing "
                       f"{', '.join(missing[:3]) or 'nothing'}, unexpected "
                       f"{', '.join(unexpected[:3]) or 'nothing'}")
    return model.to(dtype).eval()


def guidance(model_set: ModelSet) -> str:
    """NO_GUIDANCE for [klein] (step-distilled), CFG for [klein] base."""
    index = model_set.sidecar / "model_index.json"
    if index.is_file():
        try:
            distilled = bool(json.loads(index.read_text()).get("is_distilled"))
        except (OSError, ValueError):
            raise _invalid(f"{index} is not a readable JSON file") from None
    else:
        distilled = BASE_NAME not in model_set.transformer.stem.lower().split("-")
    return NO_GUIDANCE if distilled else CFG


def components(model_set: ModelSet, dtype: torch.dtype) -> dict[str, Any]:
    """transformer, text_encoder (Qwen3), tokenizer and vae of a FLUX.2 Klein set."""
    from transformers import Qwen2Tokenizer

    transformer = model_set.transformer
    return {
        "transformer": load_transformer(transformer, dtype,
                                        transformer.suffix.lower().lstrip(".")),
        "text_encoder": qwen3_encoder(model_set.parts["text_encoder"], dtype,
                                      sidecar_config(transformer, "text_encoder")),
        "tokenizer": Qwen2Tokenizer.from_pretrained(model_set.sidecar / "tokenizer"),
        "vae": vae(model_set.parts["vae"], dtype, sidecar_config(transformer, "vae")),
    }
