"""Tiny FLUX.1 transformers in the files people have, written by their authors' code: BFL's
reference model (vendored in tests/vendor/flux_bfl) saved from its own state_dict, and GGUFs
written with the `gguf` package as city96's ComfyUI-GGUF tools/convert.py writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

VENDOR = Path(__file__).parent / "vendor" / "flux_bfl"
# 256 wide, so llama.cpp's K-quants (256-element blocks) fit its rows; two 128-wide heads with
# FLUX.1's own rotary axes, one double and one single block.
WIDTH = 256


def bfl():
    """BFL's `flux.model` (Flux, FluxParams), imported from the vendored copy."""
    if str(VENDOR) not in sys.path:
        sys.path.insert(0, str(VENDOR))
    import flux.model

    return flux.model


def flux_params(guidance: bool, **sizes: object):
    """BFL's FluxParams: the tiny test transformer unless `sizes` say otherwise ([dev] embeds
    guidance, [schnell] does not)."""
    tiny = {"in_channels": 64, "out_channels": 64, "vec_in_dim": WIDTH, "context_in_dim": WIDTH,
            "hidden_size": WIDTH, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1,
            "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 10_000,
            "qkv_bias": True}
    return bfl().FluxParams(**{**tiny, **sizes}, guidance_embed=guidance)


def bfl_flux(guidance: bool, seed: int = 0, **sizes: object) -> torch.nn.Module:
    """A FLUX.1 transformer of BFL's reference implementation, random weights."""
    torch.manual_seed(seed)
    flux = bfl().Flux(flux_params(guidance, **sizes)).eval()
    with torch.no_grad():
        for tensor in flux.parameters():  # PyTorch's default init leaves the biases tiny
            tensor.normal_(0.0, 0.05)
    return flux


def state_dict(flux: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in flux.state_dict().items()}


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    """One denoising step's inputs: a 4×4 grid of packed latents and 8 text tokens."""
    generator = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(16, 3)
    img_ids[:, 1] = torch.arange(16) // 4
    img_ids[:, 2] = torch.arange(16) % 4
    return {"img": torch.randn(1, 16, 64, generator=generator),
            "txt": torch.randn(1, 8, WIDTH, generator=generator),
            "y": torch.randn(1, WIDTH, generator=generator),
            "img_ids": img_ids, "txt_ids": torch.zeros(8, 3),
            "t": torch.tensor([0.7]), "guidance": torch.tensor([3.5])}


def reference_forward(flux: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return flux(x["img"], x["img_ids"][None], x["txt"], x["txt_ids"][None], x["t"], x["y"],
                    x["guidance"] if flux.params.guidance_embed else None)


def diffusers_forward(transformer: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same step through a diffusers FluxTransformer2DModel (ids without the batch axis)."""
    with torch.no_grad():
        return transformer(
            hidden_states=x["img"], encoder_hidden_states=x["txt"], pooled_projections=x["y"],
            timestep=x["t"], img_ids=x["img_ids"], txt_ids=x["txt_ids"],
            guidance=x["guidance"] if transformer.config.guidance_embeds else None).sample


# --- GGUF --------------------------------------------------------------------------------------

def gguf():
    """The `gguf` package (in the worker lock; a test without it fails, it does not skip)."""
    import gguf

    return gguf


# convert.py's thresholds: 1-D and small tensors stay F32 (QUANTIZATION_THRESHOLD).
QUANTIZATION_THRESHOLD = 1024


def kquant_blocks(shape: tuple[int, ...], qtype, seed: int) -> np.ndarray:
    """Valid llama.cpp K-quant blocks for a tensor of `shape` (the gguf package dequantizes
    K-quants but cannot make them): random quants with small, finite fp16 scales."""
    g = gguf()
    block, size = g.GGML_QUANT_SIZES[qtype]
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    scale = np.full((raw.shape[0], 1), 2e-4, dtype=np.float16).view(np.uint8)
    if qtype == g.GGMLQuantizationType.Q6_K:
        raw[:, -2:] = scale  # d sits last
    else:
        raw[:, 0:2] = scale  # d, then dmin
        raw[:, 2:4] = np.full((raw.shape[0], 1), 1e-4, dtype=np.float16).view(np.uint8)
    return raw.reshape(*shape[:-1], cols // block * size)


def write_gguf(state: dict[str, torch.Tensor], path: Path, qtype, arch: str = "flux",
               kquant_seed: int = 0, kept: Callable[[str, int], bool] = lambda key, dims: False
               ) -> Path:
    """`state` as ComfyUI-GGUF's convert.py lays it out (its architecture key, the authors'
    tensor names, 1-D and small tensors in F32), with `qtype` where convert.py + llama-quantize
    would quantize and F16 where a tensor's rows do not fit the blocks (llama-quantize's
    fallback) or where `kept(name, dimensions)` says the patched llama-quantize leaves it as
    convert.py wrote it (F16)."""
    g = gguf()
    writer = g.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(g.GGML_QUANT_VERSION)
    kquants = {g.GGMLQuantizationType.Q4_K, g.GGMLQuantizationType.Q5_K,
               g.GGMLQuantizationType.Q6_K}
    for index, (key, tensor) in enumerate(state.items()):
        data = tensor.float().numpy()
        kind = qtype
        if data.ndim == 1 or data.size <= QUANTIZATION_THRESHOLD:
            kind = g.GGMLQuantizationType.F32
        elif kept(key, data.ndim) or data.shape[-1] % g.GGML_QUANT_SIZES[qtype][0]:
            kind = g.GGMLQuantizationType.F16
        if kind in kquants:
            raw = kquant_blocks(data.shape, kind, kquant_seed + index)
        else:
            raw = g.quants.quantize(data, kind)
        writer.add_tensor(key, raw, raw_dtype=kind)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# What ComfyUI-GGUF's patched llama-quantize leaves unquantized in an SD 3.5 MMDiT (tools/
# lcpp.patch, LLM_ARCH_SD3; city96/ComfyUI-GGUF@795e45156ece99afbc3efef911e63fcb46e6a20d,
# Apache-2.0): the embedders, the final layer, pos_embed, and every tensor that is not 2-D.
SD3_KEPT_PARTS = ("final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.",
                  "y_embedder.", "x_embedder.")
SD3_KEPT_NAMES = ("proj_out.weight", "pos_embed")


def sd3_kept(key: str, dims: int) -> bool:
    return dims != 2 or key in SD3_KEPT_NAMES or any(part in key for part in SD3_KEPT_PARTS)


def write_sd3_gguf(state: dict[str, torch.Tensor], path: Path, qtype) -> Path:
    """An SD 3.5 MMDiT as city96's sd3.5_*-Q*.gguf: convert.py strips model.diffusion_model.
    and names the architecture 'sd3'; llama-quantize keeps what sd3_kept says."""
    bare = {key.removeprefix("model.diffusion_model."): value for key, value in state.items()}
    return write_gguf(bare, path, qtype, arch="sd3", kept=sd3_kept)


def computed_weights_differ(transformer: torch.nn.Module, expected: dict) -> list[str]:
    """The linears whose computation is not F.linear with the `expected` weights, bit for bit:
    each layer is run on the identity matrix, so its output is its weight as it computes."""
    differing = []
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear):
            eye = torch.eye(module.in_features)
            bias = expected.get(name + ".bias")
            if not torch.equal(module(eye), torch.nn.functional.linear(
                    eye, expected[name + ".weight"], bias)):
                differing.append(name)
    return differing


def dequantized(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF as gguf.quants.dequantize gives it, by name, in float32."""
    g = gguf()
    reader = g.GGUFReader(path)
    out = {}
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        values = g.quants.dequantize(tensor.data, tensor.tensor_type)
        out[tensor.name] = torch.from_numpy(np.array(values)).float().reshape(shape)
    return out


# --- split component sets ----------------------------------------------------------------------

TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
             "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 1000,
             "hidden_act": "quick_gelu", "bos_token_id": 998, "eos_token_id": 999,
             "pad_token_id": 999}
TINY_T5 = {"vocab_size": 100, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2,
           "num_heads": 4, "relative_attention_num_buckets": 8, "feed_forward_proj": "gated-gelu",
           "is_encoder_decoder": False, "tie_word_embeddings": False}


def tiny_clip(seed: int = 2) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**TINY_CLIP)).eval()


def tiny_t5(seed: int = 3) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(**TINY_T5)).eval()


def bfl_autoencoder(seed: int = 4) -> torch.nn.Module:
    """BFL's own AutoEncoder (ae.safetensors' layout): 16 latent channels, the real ×8 scale,
    32-64 channels wide."""
    bfl()
    from flux.modules.autoencoder import AutoEncoder, AutoEncoderParams

    torch.manual_seed(seed)
    params = AutoEncoderParams(resolution=64, in_channels=3, ch=32, out_ch=3, ch_mult=[1, 1, 2, 2],
                               num_res_blocks=1, z_channels=16, scale_factor=0.3611,
                               shift_factor=0.1159)
    return AutoEncoder(params).eval()


def comfy_clip_l(clip: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CLIP-L's weights as ComfyUI's clip_l.safetensors keeps them: transformers' keys under
    `text_model.` (transformers 5 saves them without it)."""
    return {(key if key.startswith("text_model.") else "text_model." + key): value.contiguous()
            for key, value in clip.state_dict().items()}


def comfy_t5(t5: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """T5's weights as t5xxl_*.safetensors keep them (no tied encoder.embed_tokens copy), its
    matrices stored in `dtype` (t5xxl_fp8_e4m3fn: float8_e4m3fn)."""
    return {key: (value.to(dtype) if value.ndim > 1 else value).contiguous()
            for key, value in t5.state_dict().items() if key != "encoder.embed_tokens.weight"}


def stored_as(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights as an all-in-one file stores them: fp16/bf16 throughout; fp8 for matrices only
    (norms and biases stay bf16, as the released fp8 files keep them)."""
    if dtype == torch.float8_e4m3fn:
        return {k: (v.to(dtype) if v.ndim > 1 else v.to(torch.bfloat16)).contiguous()
                for k, v in state.items()}
    return {k: v.to(dtype).contiguous() for k, v in state.items()}


def write_t5_gguf(t5: torch.nn.Module, path: Path, qtype) -> dict[str, str]:
    """A T5 encoder as llama.cpp's convert_hf_to_gguf.py writes one (city96's
    t5-v1_1-xxl-encoder-*.gguf): architecture `t5encoder`, the package's own tensor names, 1-D
    tensors in F32. Returns {transformers' name: GGUF name}."""
    g = gguf()
    c = t5.config
    writer = g.GGUFWriter(path=None, arch="t5encoder")
    writer.add_context_length(512)
    writer.add_embedding_length(c.d_model)
    writer.add_feed_forward_length(c.d_ff)
    writer.add_block_count(c.num_layers)
    writer.add_head_count(c.num_heads)
    writer.add_key_length(c.d_kv)
    writer.add_value_length(c.d_kv)
    writer.add_layer_norm_eps(c.layer_norm_epsilon)
    writer.add_relative_attn_buckets_count(c.relative_attention_num_buckets)
    writer.add_vocab_size(c.vocab_size)
    names = g.get_tensor_name_map(g.MODEL_ARCH.T5ENCODER, c.num_layers)
    mapping = {}
    for key, tensor in t5.state_dict().items():
        if key == "encoder.embed_tokens.weight":  # tied to shared.weight
            continue
        mapping[key] = name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        data = tensor.float().numpy()
        kind = qtype
        if data.ndim == 1 or data.shape[-1] % g.GGML_QUANT_SIZES[qtype][0]:
            kind = g.GGMLQuantizationType.F32
        writer.add_tensor(name, g.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return mapping


def write_set(folder: Path, references: dict[str, torch.nn.Module]) -> Path:
    """A split FLUX.1 set as ComfyUI users keep it, from the reference models (flux, clip, t5,
    ae); returns its transformer file."""
    folder.mkdir()
    transformer = folder / "flux1-dev.safetensors"
    save_file(state_dict(references["flux"]), transformer)
    save_file(comfy_clip_l(references["clip"]), folder / "clip_l.safetensors")
    save_file(comfy_t5(references["t5"], torch.float8_e4m3fn),
              folder / "t5xxl_fp8_e4m3fn.safetensors")
    save_file(state_dict(references["ae"]), folder / "ae.safetensors")
    # CLIP's head count is not in its weights: the tiny one's travels in the sidecar.
    sidecar = folder / "flux1-dev.config" / "text_encoder"
    sidecar.mkdir(parents=True)
    (sidecar / "config.json").write_text(json.dumps(TINY_CLIP))
    return transformer


def refused_before_anything(tmp_path: Path, model: Path) -> str:
    """`sdtui --no-ui --model MODEL` as a user runs it: refused with exit 2, no traceback, no
    ledger written. Its stderr."""
    from sdtui.errors import EXIT_BAD_INPUT

    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "sdtui", "--no-ui", "--model", str(model), "--prompt",
         "a lighthouse"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
        check=False, env={"SDTUI_STATE_DIR": str(state),
                          "SDTUI_CONFIG_DIR": str(tmp_path / "config"),
                          "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "Traceback" not in result.stderr
    assert not state.exists() or not any(state.rglob("*.json"))
    return result.stderr
