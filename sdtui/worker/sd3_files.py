"""SD 3.5's components from Stability's single files (`sd3.5_medium.safetensors`,
`sd3.5_large.safetensors`, `sd3.5_large_turbo.safetensors`, and fine-tunes in their layout),
built by diffusers' own converters:

- the MMDiT under `model.diffusion_model.` (joint_blocks, x_embedder, ...), mapped by diffusers'
  `convert_sd3_transformer_checkpoint_to_diffusers`;
- the VAE under `first_stage_model.` (the LDM autoencoder layout), mapped by diffusers'
  `convert_ldm_vae_checkpoint`;
- CLIP-L, CLIP-G and T5-XXL under `text_encoders.clip_l.transformer.`,
  `text_encoders.clip_g.transformer.` and `text_encoders.t5xxl.transformer.`, in transformers'
  own layout. Stability ships the file with and without them; T5 is optional (the model runs on
  the two CLIPs), the CLIPs are not.

The same components from a split set (sdtui.modelsets), as ComfyUI users keep SD 3.5: the MMDiT
as Stability's file (sd3.5_large.safetensors: the MMDiT and the VAE, no text encoders), a bare
MMDiT in that layout, or a `.gguf` in city96's ComfyUI-GGUF layout (architecture `sd3`, the same
tensor names without the prefix), whose weights stay quantized: diffusers' GGUFLinear
dequantizes one layer at a time as it computes (sdtui.worker.gguf_files); `clip_l.safetensors`,
`clip_g.safetensors`, an optional `t5xxl_*.safetensors` or T5 `.gguf`, and the VAE, in the
transformer file or beside it (`sd3.5_vae.safetensors` in diffusers' layout, as the Hub's
vae/diffusion_pytorch_model.safetensors is, or `sd3_vae.safetensors` in the LDM layout, as
Stability's reference code names it).

Configurations come from the tensors' shapes, as Stability's own `sd3_impls.BaseModel` reads
them (64 channels per head, as many heads as blocks); what the weights cannot say (CLIP's head
count and activation, the VAE's scaling and shift) is SD 3.5's own unless the file's `S.config/`
sidecar holds `text_encoder/`, `text_encoder_2/` or `vae/config.json`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sdtui.modelsets import SD3_GGUF, SD3_MARKER, SD3_PREFIX, SD3_VAE_PREFIX, ModelSet
from sdtui.worker.checkpoint import Checkpoint, ModelInvalid
from sdtui.worker.families import sd3
from sdtui.worker.flux_parts import any_vae, clip_l, sidecar_config, t5_encoder, t5_gguf, vae

PREFIX = SD3_PREFIX
MARKER = PREFIX + SD3_MARKER
VAE_PREFIX = SD3_VAE_PREFIX
# SD3Transformer2DModel's base config for diffusers' single-file loader
# (stabilityai/stable-diffusion-3.5-large/transformer/config.json); every value it holds is read
# from the file's shapes instead (transformer_config).
CONFIG = sd3.FAMILY.assets / "transformer" / "config.json"
HEAD_WIDTH = 64  # every MMDiT Stability released: sd3_impls derives depth as width // 64
# What SD 3.5's released components use where the weights do not say
# (stabilityai/stable-diffusion-3.5-large: text_encoder*/config.json, vae/config.json).
CLIP_L = {"num_attention_heads": 12, "hidden_act": "quick_gelu"}
CLIP_G = {"num_attention_heads": 20, "hidden_act": "gelu"}
VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}


def is_sd3_layout(shapes: Mapping[str, Any]) -> bool:
    return MARKER in shapes


def transformer_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """SD3Transformer2DModel's config from an original-layout MMDiT's shapes (keys without the
    model.diffusion_model. prefix)."""
    width, channels, patch, _ = shapes["x_embedder.proj.weight"]
    depth = 1 + max(int(key.split(".")[1]) for key in shapes if key.startswith("joint_blocks."))
    dual = sorted({int(key.split(".")[1]) for key in shapes
                   if key.startswith("joint_blocks.") and ".x_block.attn2." in key})
    return {
        "sample_size": 128, "patch_size": patch, "in_channels": channels,
        "out_channels": shapes["final_layer.linear.weight"][0] // (patch * patch),
        "num_layers": depth, "attention_head_dim": HEAD_WIDTH,
        "num_attention_heads": width // HEAD_WIDTH,
        "joint_attention_dim": shapes["context_embedder.weight"][1],
        "caption_projection_dim": shapes["context_embedder.weight"][0],
        "pooled_projection_dim": shapes["y_embedder.mlp.0.weight"][1],
        "pos_embed_max_size": round(math.sqrt(shapes["pos_embed"][-2])),
        "dual_attention_layers": tuple(dual),
        "qk_norm": "rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in shapes else None,
    }


def load_transformer(path: Path, dtype: torch.dtype, fmt: str = "safetensors") -> Any:
    """The MMDiT of a Stability file (under model.diffusion_model. or bare) or of a 'sd3' GGUF
    as a diffusers SD3Transformer2DModel computing in `dtype`."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    if fmt == "gguf":
        return _gguf_transformer(path, dtype)
    checkpoint = Checkpoint(path, "safetensors")
    prefixed = is_sd3_layout(checkpoint.shapes)
    if not prefixed and SD3_MARKER not in checkpoint.shapes:
        raise ModelInvalid(f"model file {path} holds no SD 3.5 transformer (no {MARKER})",
                           family=sd3.FAMILY.id)
    mine = (lambda key: key.startswith(PREFIX)) if prefixed else (
        lambda key: not key.startswith((VAE_PREFIX, "text_encoders.")))
    shapes = {key.removeprefix(PREFIX): shape for key, shape in checkpoint.shapes.items()
              if mine(key)}
    state = checkpoint.read(mine, dtype)
    # Built without weights and given the file's: a model built with its own (float32, random)
    # held twice the file in RAM before taking them.
    with torch.device("meta"):
        transformer = SD3Transformer2DModel.from_config(transformer_config(shapes))
    transformer.load_state_dict(convert_sd3_transformer_checkpoint_to_diffusers(state),
                                strict=True, assign=True)
    return transformer.to(dtype).eval()


def _gguf_transformer(path: Path, dtype: torch.dtype) -> Any:
    """The MMDiT of a 'sd3' GGUF, kept quantized, through diffusers' single-file loader with its
    GGUF quantizer (as FLUX.1's: sdtui.worker.flux_files)."""
    from diffusers import GGUFQuantizationConfig, SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from sdtui.worker.gguf_files import exact_dequantization, read_gguf

    state, shapes = read_gguf(path, SD3_GGUF, "an SD 3.5 transformer",
                              "SD 3.5 transformers as GGUF (ComfyUI-GGUF's 'sd3' layout)")
    try:
        config = transformer_config(shapes)
    except (KeyError, ValueError, IndexError):
        raise ModelInvalid(f"model file {path} is an incomplete SD 3.5 transformer: it lacks "
                           "x_embedder, pos_embed, context_embedder, y_embedder or final_layer",
                           family=sd3.FAMILY.id) from None
    transformer = SD3Transformer2DModel.from_single_file(
        convert_sd3_transformer_checkpoint_to_diffusers(state), config=str(CONFIG),
        local_files_only=True, torch_dtype=dtype,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), **config)
    return exact_dequantization(transformer).eval()


def set_components(model_set: ModelSet, dtype: torch.dtype) -> dict[str, Any]:
    """transformer, vae, text_encoder (CLIP-L), text_encoder_2 (CLIP-G) and text_encoder_3
    (T5-XXL, None where the set has none) of a split SD 3.5 set, computing in `dtype`. The
    transformer's `S.config/` sidecar configures the set."""
    transformer, parts = model_set.transformer, model_set.parts
    vae_file, vae_prefix = ((parts["vae"], "") if "vae" in parts else (transformer, VAE_PREFIX))
    t5 = parts.get("text_encoder_3")
    return {
        "transformer": load_transformer(transformer, dtype, transformer.suffix.lower()[1:]),
        "vae": any_vae(vae_file, dtype, {**VAE, **sidecar_config(transformer, "vae")},
                       vae_prefix),
        "text_encoder": clip_l(parts["text_encoder"], dtype,
                               {**CLIP_L, **sidecar_config(transformer, "text_encoder")},
                               with_projection=True),
        "text_encoder_2": clip_l(parts["text_encoder_2"], dtype,
                                 {**CLIP_G, **sidecar_config(transformer, "text_encoder_2")},
                                 with_projection=True),
        "text_encoder_3": None if t5 is None else (
            t5_gguf if t5.suffix.lower() == ".gguf" else t5_encoder)(t5, dtype),
    }


def components(path: Path, dtype: torch.dtype) -> dict[str, Any]:
    """transformer, vae, text_encoder (CLIP-L), text_encoder_2 (CLIP-G) and text_encoder_3
    (T5-XXL, None where the file has none) of a Stability single file, computing in `dtype`."""
    shapes = Checkpoint(path, "safetensors").shapes
    encoders = {spec.name: spec for spec in sd3.FAMILY.text_encoders}
    parts = {"CLIP-L": encoders["text_encoder"].prefix, "CLIP-G": encoders["text_encoder_2"].prefix,
             "VAE": VAE_PREFIX}
    missing = [label for label, prefix in parts.items()
               if not any(key.startswith(prefix) for key in shapes)]
    if missing:
        raise ModelInvalid(
            f"model file {path} is an SD 3.5 file without its {' and '.join(missing)} weights; "
            f"sdtui loads Stability's single files with the CLIPs and VAE inside, a transformer "
            f"file with clip_l.safetensors, clip_g.safetensors and the VAE beside it, or a "
            f"diffusers folder", family=sd3.FAMILY.id)
    t5 = encoders["text_encoder_3"].prefix
    return {
        "transformer": load_transformer(path, dtype),
        "vae": vae(path, dtype, {**VAE, **sidecar_config(path, "vae")}, VAE_PREFIX),
        "text_encoder": clip_l(path, dtype, {**CLIP_L, **sidecar_config(path, "text_encoder")},
                               parts["CLIP-L"], with_projection=True),
        "text_encoder_2": clip_l(path, dtype,
                                 {**CLIP_G, **sidecar_config(path, "text_encoder_2")},
                                 parts["CLIP-G"], with_projection=True),
        "text_encoder_3": t5_encoder(path, dtype, t5) if any(
            key.startswith(t5) for key in shapes) else None,
    }
