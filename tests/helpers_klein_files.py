"""Tiny FLUX.2 Klein sets in the files people have, written from a tiny Klein diffusers folder:
the transformer in BFL's original layout by the inverse of diffusers' own converter
(`convert_flux2_transformer_checkpoint_to_diffusers`, which test_klein_sets checks it against),
or as a GGUF the way city96's ComfyUI-GGUF tools/convert.py writes it; the VAE in BFL's layout by
diffusers' own script the other way (tests/vendor/diffusers_scripts, convert_vae_state_dict)
plus FLUX.2's quant-conv placement and batch-norm statistics; the Qwen3 text encoder with
transformers' keys, as ComfyUI's qwen_3_4b.safetensors keeps them."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers_flux_files import write_gguf

VENDOR = Path(__file__).parent / "vendor" / "diffusers_scripts"

# diffusers' names -> BFL's, the renames of convert_flux2_transformer_checkpoint_to_diffusers
# read backwards.
RENAMES = {
    "x_embedder": "img_in", "context_embedder": "txt_in",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
    "proj_out": "final_layer.linear",
}
DOUBLE = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale",
          "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
          "attn.to_out.0": "img_attn.proj", "ff.linear_in": "img_mlp.0",
          "ff.linear_out": "img_mlp.2",
          "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
          "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
          "attn.to_add_out": "txt_attn.proj", "ff_context.linear_in": "txt_mlp.0",
          "ff_context.linear_out": "txt_mlp.2"}
SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2",
          "attn.norm_q.weight": "norm.query_norm.scale",
          "attn.norm_k.weight": "norm.key_norm.scale"}
QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
       "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


def _renamed(name: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if name == new or name.startswith(new + "."):
            return old + name[len(new):]
    raise KeyError(name)


def original_transformer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Flux2Transformer2DModel's state dict in BFL's original layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("transformer_blocks."):
            _, index, rest = key.split(".", 2)
            if any(rest.startswith(name + ".") for names in QKV.values() for name in names):
                continue  # fused below
            out[f"double_blocks.{index}.{_renamed(rest, DOUBLE)}"] = value
        elif key.startswith("single_transformer_blocks."):
            _, index, rest = key.split(".", 2)
            out[f"single_blocks.{index}.{_renamed(rest, SINGLE)}"] = value
        elif key.startswith("norm_out.linear."):  # BFL's (shift, scale); diffusers' (scale, shift)
            scale, shift = value.chunk(2, dim=0)
            out["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = torch.cat(
                [shift, scale], dim=0)
        else:
            out[_renamed(key, RENAMES)] = value
    blocks = {key.split(".")[1] for key in state if key.startswith("transformer_blocks.")}
    for index in blocks:
        for fused, names in QKV.items():
            for kind in ("weight", "bias"):
                parts = [state.get(f"transformer_blocks.{index}.{name}.{kind}") for name in names]
                if parts[0] is not None:
                    out[f"double_blocks.{index}.{fused}.{kind}"] = torch.cat(parts, dim=0)
    return {key: value.detach().clone().contiguous() for key, value in out.items()}


def original_vae(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An AutoencoderKLFlux2 in BFL's FLUX.2 autoencoder layout: diffusers' own LDM mapping
    backwards, the quant convs inside encoder and decoder, the batch-norm statistics."""
    spec = importlib.util.spec_from_file_location(
        "convert_sd", VENDOR / "convert_diffusers_to_original_stable_diffusion.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    state = {k: v for k, v in vae.state_dict().items() if not k.startswith("bn.")}
    ldm = script.convert_vae_state_dict(state)
    inside = {"quant_conv.": "encoder.quant_conv.", "post_quant_conv.": "decoder.post_quant_conv."}
    out = {next((new + k.removeprefix(old) for old, new in inside.items()
                 if k.startswith(old)), k): v for k, v in ldm.items()}
    out["bn.running_mean"], out["bn.running_var"] = vae.bn.running_mean, vae.bn.running_var
    return {key: value.detach().clone().contiguous() for key, value in out.items()}


def write_klein_set(folder: Path, out: Path, transformer_name: str, qtype=None,
                    prefix: str = "") -> Path:
    """A FLUX.2 Klein set as ComfyUI users keep it, from the tiny diffusers `folder`: the
    transformer (safetensors, or a GGUF of `qtype`), qwen_3_4b.safetensors, flux2-vae.safetensors,
    and the sidecar with Qwen3's tokenizer and the configs a toy's dims need. Returns the
    transformer file."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    out.mkdir(parents=True)
    transformer = Flux2Transformer2DModel.from_pretrained(folder / "transformer")
    original = original_transformer(transformer.state_dict())
    path = out / transformer_name
    if qtype is None:
        save_file({prefix + k: v for k, v in original.items()}, path)
    else:
        write_gguf(original, path, qtype)
    qwen = Qwen3ForCausalLM.from_pretrained(folder / "text_encoder")
    save_file({k: v.contiguous() for k, v in qwen.state_dict().items() if k != "lm_head.weight"},
              out / "qwen_3_4b.safetensors")
    vae = AutoencoderKLFlux2.from_pretrained(folder / "vae")
    save_file(original_vae(vae), out / "flux2-vae.safetensors")
    sidecar = path.with_name(path.stem + ".config")
    shutil.copytree(folder / "tokenizer", sidecar / "tokenizer")
    # What the weights cannot say, where the toy differs from FLUX.2 [klein] 4B.
    toy = {"transformer": {"_class_name": "Flux2Transformer2DModel",
                           "axes_dims_rope": transformer.config.axes_dims_rope},
           "text_encoder": {"rope_parameters": qwen.config.rope_parameters},
           "vae": {"norm_num_groups": vae.config.norm_num_groups}}
    for component, config in toy.items():
        (sidecar / component).mkdir(parents=True)
        (sidecar / component / "config.json").write_text(json.dumps(config))
    return path
