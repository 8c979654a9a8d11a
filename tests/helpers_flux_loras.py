"""Tiny FLUX.1 LoRAs in the layouts people download, written the way their tools write them:

- kohya's (sd-scripts networks/lora_flux.py, Apache-2.0):
  `lora_unet_` + the dotted path of every Linear inside BFL's DoubleStreamBlock and
  SingleStreamBlock modules with "." as "_", `lora_te1_` for CLIP-L's attention and MLP
  Linears, three tensors each (`lora_down`, `lora_up`, `alpha`). The names come from BFL's own
  model (the vendored reference), as kohya's come from the model it trains. Single blocks'
  `linear1` (fused q, k, v and MLP) is left out: diffusers' converter splits it at FLUX.1's
  full widths (3072 ×3 + 12288, as sd-scripts' get_qkv_mlp_split_dims), which a tiny model
  does not have; a LoRA trained on some layers only is an ordinary kohya file.
- diffusers' (its training scripts; ai-toolkit saves FLUX.1 LoRAs in the same peft keys,
  `transformer.….lora_A.weight`): peft adapters on the pipeline's own transformer and CLIP,
  saved by `FluxPipeline.save_lora_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sdtui.devtools.tiny_lora import TEXT_ENCODER_TARGETS, kohya_modules, random_lora

FLUX_TARGETS = ("DoubleStreamBlock", "SingleStreamBlock")
# sd-scripts' metadata for a FLUX.1 [dev] LoRA (library/sai_model_spec.py's architecture).
KOHYA_FLUX_METADATA = {"ss_network_module": "networks.lora_flux", "ss_network_dim": "4",
                       "ss_network_alpha": "2.0", "ss_base_model_version": "flux1",
                       "modelspec.architecture": "flux-1-dev/lora"}
# What diffusers' SD3 training script targets (examples/dreambooth/train_dreambooth_lora_sd3.py).
SD3_TARGETS = ["attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
               "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v"]


def kohya_flux_lora(bfl: torch.nn.Module, clip: torch.nn.Module | None, out: Path,
                    seed: int = 0, rank: int = 4, alpha: float = 2.0) -> Path:
    """A kohya-layout FLUX.1 LoRA for the transformer BFL's `bfl` is (and `clip`)."""
    modules = [(name, module) for name, module in kohya_modules(bfl, "lora_unet", FLUX_TARGETS)
               if not name.endswith("_linear1")]
    if clip is not None:
        te_path = "" if hasattr(clip, "text_model") else "text_model."
        modules += kohya_modules(clip, "lora_te1", TEXT_ENCODER_TARGETS, te_path)
    state = random_lora(modules, rank, alpha, torch.Generator().manual_seed(seed), 0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, out, metadata=KOHYA_FLUX_METADATA)
    return out


def bfl_twin(transformer: Any) -> torch.nn.Module:
    """BFL's FLUX.1 of a diffusers FluxTransformer2DModel's shapes (its module names are what
    kohya's files are named after)."""
    from tests.helpers_flux_files import bfl_flux

    c = transformer.config
    width = c.num_attention_heads * c.attention_head_dim
    return bfl_flux(guidance=c.guidance_embeds, in_channels=c.in_channels,
                    out_channels=c.out_channels or c.in_channels,
                    vec_in_dim=c.pooled_projection_dim, context_in_dim=c.joint_attention_dim,
                    hidden_size=width, num_heads=c.num_attention_heads, depth=c.num_layers,
                    depth_single_blocks=c.num_single_layers, axes_dim=list(c.axes_dims_rope))


def diffusers_lora(pipeline_class: Any, pipe: Any, out: Path, targets: Any,
                   text_encoder: bool = True, seed: int = 0) -> Path:
    """A LoRA in diffusers' layout for `pipe`'s transformer (and CLIP text encoder), random
    and non-zero, saved by the pipeline class's own save_lora_weights."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    config = {"r": 4, "lora_alpha": 8, "init_lora_weights": False}
    pipe.transformer.add_adapter(LoraConfig(target_modules=targets, **config))
    layers = {"transformer_lora_layers": get_peft_model_state_dict(pipe.transformer)}
    if text_encoder:
        # peft itself: transformers' add_adapter asks for a newer peft than the lock has.
        inject_adapter_in_model(LoraConfig(
            target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], **config),
            pipe.text_encoder)
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(pipe.text_encoder)
    out.parent.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(out.parent, weight_name=out.name, **layers)
    return out
