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

from sdtui.worker.checkpoint import Checkpoint, ModelInvalid
from sdtui.worker.families import sd3
from sdtui.worker.flux_parts import clip_l, sidecar_config, t5_encoder, vae

PREFIX = "model.diffusion_model."
MARKER = PREFIX + "joint_blocks.0.x_block.attn.qkv.weight"
VAE_PREFIX = "first_stage_model."
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
        "pos_embed_max_size": round(math.sqrt(shapes["pos_embed"][1])),
        "dual_attention_layers": tuple(dual),
        "qk_norm": "rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in shapes else None,
    }


def load_transformer(path: Path, dtype: torch.dtype) -> Any:
    """The MMDiT of a Stability single file as a diffusers SD3Transformer2DModel."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    checkpoint = Checkpoint(path, "safetensors")
    if not is_sd3_layout(checkpoint.shapes):
        raise ModelInvalid(f"model file {path} holds no SD 3.5 transformer (no {MARKER})",
                           family=sd3.FAMILY.id)
    shapes = {key.removeprefix(PREFIX): shape for key, shape in checkpoint.shapes.items()
              if key.startswith(PREFIX)}
    state = checkpoint.read(lambda key: key.startswith(PREFIX), dtype)
    # Built without weights and given the file's: a model built with its own (float32, random)
    # held twice the file in RAM before taking them.
    with torch.device("meta"):
        transformer = SD3Transformer2DModel.from_config(transformer_config(shapes))
    transformer.load_state_dict(convert_sd3_transformer_checkpoint_to_diffusers(state),
                                strict=True, assign=True)
    return transformer.to(dtype).eval()


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
            f"sdtui loads Stability's single files with the text encoders and VAE inside "
            f"(sd3.5_large.safetensors as Stability ships it, not a transformer alone) or a "
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
