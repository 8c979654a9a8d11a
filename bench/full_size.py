"""Random-weight model files in the released shapes of FLUX.1 [schnell]/[dev], T5-XXL, SD 3.5
Medium and FLUX.2 [klein] 4B, in the files people have, for bench_load.py and bench_gpu.py (no
weights can be downloaded on the machines that run them). `tiny=True` writes the same files in
the test models' shapes, so that a test runs the very code that writes the full-size ones.

Shapes come from the authors' own code, built on the meta device (no memory): BFL's `Flux` and
`AutoEncoder` (tests/vendor/flux_bfl, with the parameters of black-forest-labs/flux
src/flux/util.py), Stability's `MMDiTX` (tests/vendor/sd35_stability, with the shapes
sd3_impls.BaseModel reads from sd3.5_medium.safetensors), and transformers' and diffusers'
classes with the released configs. Files are written tensor by tensor, so none is ever whole
in memory: a .gguf in city96's ComfyUI-GGUF layout (tests/helpers_flux_files.py's rules: 1-D
and small tensors F32, rows that do not fit the blocks F16), `.safetensors` as ComfyUI users
keep the parts, and a diffusers folder for Klein.

Values: every float is finite, |w| in [2^-6, 2^-5) with a random sign (drawn as bit patterns,
which is fast enough for 12 B parameters); quantized blocks get small, finite scales.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests/ holds the vendored reference models
    sys.path.insert(0, str(REPO))

from tests import helpers_flux_files as flux_files  # noqa: E402

Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]

SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                     torch.float8_e4m3fn: "F8_E4M3", torch.int64: "I64"}
# Each float format's bits for |w| in [2^-6, 2^-5): (keep sign and mantissa, exponent bits).
_FINITE_BITS = {torch.float16: (np.uint16, 0x83FF, 9 << 10),
                torch.bfloat16: (np.uint16, 0x807F, 121 << 7),
                torch.float8_e4m3fn: (np.uint8, 0x87, 1 << 3)}
# Released configs (Hub repos' config.json) of the parts whose shapes are transformers' own.
T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
          "vocab_size": 32128, "relative_attention_num_buckets": 32,
          "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
          "num_hidden_layers": 32, "projection_dim": 1280, "hidden_act": "gelu",
          "vocab_size": 49408, "max_position_embeddings": 77}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
          "num_hidden_layers": 12, "projection_dim": 768, "hidden_act": "quick_gelu",
          "vocab_size": 49408, "max_position_embeddings": 77}
# Test-sized CLIPs whose head counts are the released ones (sdtui reads those from no weight).
TINY_CLIP_L = {**CLIP_L, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
               "projection_dim": 48}
TINY_CLIP_G = {**CLIP_G, "hidden_size": 40, "intermediate_size": 64, "num_hidden_layers": 2,
               "projection_dim": 40}
# black-forest-labs/FLUX.2-klein-4B: transformer/config.json (5 double and 20 single blocks,
# 24 heads of 128) and Qwen/Qwen3-4B's text encoder, whose hidden states 9, 18 and 27 are
# stacked (3 x 2560 = the transformer's joint_attention_dim).
KLEIN_4B = {"patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20,
            "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 7680,
            "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
            "axes_dims_rope": [32, 32, 32, 32], "rope_theta": 2000, "guidance_embeds": False}
QWEN3_4B = {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 40960, "tie_word_embeddings": True,
            "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000}


def shapes_of(module: torch.nn.Module, dtype: Callable[[str, torch.Tensor], torch.dtype],
              prefix: str = "", skip: Iterable[str] = ()) -> Layout:
    """A meta module's tensors as (shape, stored dtype), named as its state_dict names them."""
    skipped = set(skip)
    return {prefix + key: (tuple(value.shape), dtype(key, value))
            for key, value in module.state_dict().items() if key not in skipped}


def floats(kind: torch.dtype) -> Callable[[str, torch.Tensor], torch.dtype]:
    """Every floating tensor stored as `kind`, integer buffers as they are."""
    return lambda key, value: kind if value.is_floating_point() else value.dtype


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype,
                  rng: np.random.Generator) -> torch.Tensor:
    n = int(np.prod(shape, dtype=np.int64))
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    store = dtype if dtype in _FINITE_BITS else torch.float16
    bits, keep, exponent = _FINITE_BITS[store]
    raw = rng.integers(0, np.iinfo(bits).max, size=n, dtype=bits, endpoint=True)
    raw &= bits(keep)
    raw |= bits(exponent)
    values = torch.from_numpy(raw).view(store).reshape(shape)
    if name.endswith("running_var"):  # a batch norm's variance is positive
        values = values.abs()
    return values.to(dtype)


def write_safetensors(layout: Layout, out: Path, seed: int = 0) -> Path:
    """`layout` as a .safetensors file, the header first, then each tensor as it is drawn."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dtype) in layout.items():
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, (shape, dtype) in layout.items():
            tensor = random_tensor(name, shape, dtype, rng)
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return out


def quant_blocks(shape: tuple[int, ...], qtype, rng: np.random.Generator) -> np.ndarray:
    """Random, valid llama.cpp blocks (Q8_0 or a K-quant) for a tensor of `shape`, with small
    finite fp16 scales (tests/helpers_flux_files.kquant_blocks' layout)."""
    g = flux_files.gguf()
    block, size = g.GGML_QUANT_SIZES[qtype]
    rows, cols = int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    scale = np.full((raw.shape[0], 1), 2e-4, dtype=np.float16).view(np.uint8)
    if qtype == g.GGMLQuantizationType.Q6_K:
        raw[:, -2:] = scale  # d sits last
    else:
        raw[:, 0:2] = scale  # d (then, for K-quants, dmin)
        if qtype != g.GGMLQuantizationType.Q8_0:
            raw[:, 2:4] = np.full((raw.shape[0], 1), 1e-4, dtype=np.float16).view(np.uint8)
    return raw.reshape(*shape[:-1], cols // block * size)


def write_gguf(layout: Layout, out: Path, qtype, arch: str = "flux", seed: int = 0) -> Path:
    """`layout` as ComfyUI-GGUF's convert.py lays a transformer out (see
    tests/helpers_flux_files.write_gguf), written one tensor at a time."""
    g = flux_files.gguf()
    f32, f16 = g.GGMLQuantizationType.F32, g.GGMLQuantizationType.F16
    kinds = {}
    for name, (shape, _) in layout.items():
        n = int(np.prod(shape, dtype=np.int64))
        kinds[name] = (f32 if len(shape) == 1 or n <= flux_files.QUANTIZATION_THRESHOLD
                       else f16 if shape[-1] % g.GGML_QUANT_SIZES[qtype][0] else qtype)
    writer = g.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(g.GGML_QUANT_VERSION)
    for name, (shape, _) in layout.items():
        kind = kinds[name]
        if kind in (f32, f16):
            dtype = np.float32 if kind == f32 else np.float16
            writer.add_tensor_info(name, shape, np.dtype(dtype),
                                   int(np.prod(shape)) * np.dtype(dtype).itemsize)
        else:
            block, size = g.GGML_QUANT_SIZES[kind]
            byte_shape = (*shape[:-1], shape[-1] // block * size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8),
                                   int(np.prod(byte_shape, dtype=np.int64)), raw_dtype=kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, (shape, _) in layout.items():
        kind = kinds[name]
        if kind in (f32, f16):
            values = random_tensor(name, shape, torch.float16, rng).numpy()
            writer.write_tensor_data(values.astype(np.float32 if kind == f32 else np.float16))
        else:
            writer.write_tensor_data(quant_blocks(shape, kind, rng))
    writer.close()
    return out


# --- FLUX.1 --------------------------------------------------------------------------------

def flux1_layout(variant: str, tiny: bool = False) -> Layout:
    """BFL's FLUX.1 transformer ([dev] embeds guidance), as flux1-*.safetensors names it."""
    released = {"vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072,
                "num_heads": 24, "depth": 19, "depth_single_blocks": 38}
    if tiny:  # as wide as the tiny CLIP-L's pooled output and the tiny T5
        released = {"vec_in_dim": TINY_CLIP_L["hidden_size"],
                    "context_in_dim": flux_files.TINY_T5["d_model"]}
    with torch.device("meta"):
        model = flux_files.bfl().Flux(flux_files.flux_params(variant == "dev", **released))
    return shapes_of(model, floats(torch.bfloat16))


def t5_layout(dtype: torch.dtype = torch.float8_e4m3fn, tiny: bool = False) -> Layout:
    """T5-XXL's encoder as t5xxl_fp8_e4m3fn.safetensors keeps it: matrices in `dtype`, norms
    in float32, no tied encoder.embed_tokens copy (tests/helpers_flux_files.comfy_t5)."""
    from transformers import T5Config, T5EncoderModel

    from sdtui.devtools.tiny_flux import t5_tokenizer

    config = {**T5_XXL, **({**flux_files.TINY_T5, "vocab_size": len(t5_tokenizer())} if tiny
                           else {})}
    with torch.device("meta"):
        model = T5EncoderModel(T5Config(**config))
    return shapes_of(model, lambda key, value: dtype if value.ndim > 1 else torch.float32,
                     skip=("encoder.embed_tokens.weight",))


def clip_layout(config: dict, prefix: str, dtype: torch.dtype,
                with_projection: bool = False) -> Layout:
    """A CLIP text encoder in transformers' layout under `prefix` + "text_model." (ComfyUI's
    clip_l.safetensors; Stability's text_encoders.clip_*.transformer.)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with torch.device("meta"):
        model = cls(CLIPTextConfig(**config))
    layout = shapes_of(model, floats(dtype), skip=("text_model.embeddings.position_ids",))
    return {prefix + (key if key.startswith(("text_model.", "text_projection"))
                      else "text_model." + key): value for key, value in layout.items()}


def autoencoder_layout(prefix: str = "", tiny: bool = False) -> Layout:
    """BFL's AutoEncoder (ae.safetensors; SD 3.5's VAE has the same LDM layout)."""
    flux_files.bfl()
    from flux.modules.autoencoder import AutoEncoder, AutoEncoderParams

    params = AutoEncoderParams(resolution=256, in_channels=3, ch=32 if tiny else 128, out_ch=3,
                               ch_mult=[1, 1, 2, 2] if tiny else [1, 2, 4, 4],
                               num_res_blocks=1 if tiny else 2, z_channels=16,
                               scale_factor=0.3611, shift_factor=0.1159)
    with torch.device("meta"):
        model = AutoEncoder(params)
    return shapes_of(model, floats(torch.float32), prefix)


def write_flux1_set(folder: Path, variant: str, qtype_name: str, tiny: bool = False) -> Path:
    """A split FLUX.1 set as ComfyUI users keep it: flux1-VARIANT-QTYPE.gguf, clip_l,
    t5xxl_fp8_e4m3fn and ae.safetensors, and the transformer's sidecar with the T5 tokenizer
    (not shipped; sdtui.devtools.tiny_flux's small one). Returns the transformer file."""
    from sdtui.devtools.tiny_flux import t5_tokenizer

    g = flux_files.gguf()
    transformer = folder / f"flux1-{variant}-{qtype_name}.gguf"
    if transformer.exists():
        return transformer
    write_gguf(flux1_layout(variant, tiny), transformer,
               getattr(g.GGMLQuantizationType, qtype_name.removesuffix("_S")))
    clip = TINY_CLIP_L if tiny else CLIP_L
    write_safetensors(clip_layout(clip, "", torch.float16), folder / "clip_l.safetensors", 1)
    write_safetensors(t5_layout(tiny=tiny), folder / "t5xxl_fp8_e4m3fn.safetensors", 2)
    write_safetensors(autoencoder_layout(tiny=tiny), folder / "ae.safetensors", 3)
    sidecar = folder / f"{transformer.stem}.config"
    t5_tokenizer().save_pretrained(sidecar / "tokenizer_2")
    if tiny:  # a tiny CLIP's width is not CLIP-L's: its config travels in the sidecar
        (sidecar / "text_encoder").mkdir(parents=True)
        (sidecar / "text_encoder" / "config.json").write_text(json.dumps(clip))
    return transformer


# --- SD 3.5 Medium -------------------------------------------------------------------------

def mmditx_layout(tiny: bool = False, prefix: str = "model.diffusion_model.") -> Layout:
    """Stability's MMDiT-X in sd3.5_medium.safetensors' shapes (24 blocks of 64-wide heads,
    384² positions, a second attention in blocks 0-12), as sd3_impls.BaseModel builds it."""
    vendor = REPO / "tests" / "vendor" / "sd35_stability"
    if str(vendor) not in sys.path:
        sys.path.insert(0, str(vendor))
    import mmditx

    depth, positions, dual, adm, context = (
        (2, 16, [0], TINY_CLIP_L["projection_dim"] + TINY_CLIP_G["projection_dim"], 96) if tiny
        else (24, 384, list(range(13)), 2048, 4096))
    with torch.device("meta"):
        model = mmditx.MMDiTX(
            input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None,
            pos_embed_max_size=positions, patch_size=2, in_channels=16, depth=depth,
            num_patches=positions * positions, adm_in_channels=adm, qk_norm="rms",
            x_block_self_attn_layers=dual,
            context_embedder_config={"target": "torch.nn.Linear",
                                     "params": {"in_features": context,
                                                "out_features": 64 * depth}})
    return shapes_of(model, floats(torch.float16), prefix)


def write_sd35_medium(out: Path, tiny: bool = False, transformer_only: bool = False) -> Path:
    """sd3.5_medium.safetensors as Stability ships it without T5 (the MMDiT-X, CLIP-L, CLIP-G
    and the VAE, in float16; T5 is optional), or the MMDiT-X alone."""
    if out.exists():
        return out
    layout = mmditx_layout(tiny)
    if not transformer_only:
        layout.update(clip_layout(TINY_CLIP_L if tiny else CLIP_L,
                                  "text_encoders.clip_l.transformer.", torch.float16, True))
        layout.update(clip_layout(TINY_CLIP_G if tiny else CLIP_G,
                                  "text_encoders.clip_g.transformer.", torch.float16, True))
        layout.update({key: (shape, torch.float16) for key, (shape, _) in
                       autoencoder_layout("first_stage_model.", tiny).items()})
    write_safetensors(layout, out, 4)
    if tiny and not transformer_only:
        for name, config in (("text_encoder", TINY_CLIP_L), ("text_encoder_2", TINY_CLIP_G)):
            folder = out.with_name(out.stem + ".config") / name
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps(config))
    return out


# --- FLUX.2 [klein] 4B ---------------------------------------------------------------------

def _replace_component(folder: Path, name: str, config: dict, layout: Layout,
                       weights: str, seed: int) -> None:
    component = folder / name
    for old in component.glob("*.safetensors*"):
        old.unlink()
    saved = json.loads((component / "config.json").read_text())
    (component / "config.json").write_text(json.dumps({**saved, **config}))
    write_safetensors(layout, component / weights, seed)


def write_klein_4b(out: Path, tiny: bool = False, qwen3: bool = True) -> Path:
    """A FLUX.2 [klein] 4B diffusers folder: the tiny pipeline (sdtui.devtools.tiny_klein: its
    tokenizer and scheduler) with the released transformer, VAE and (`qwen3`) Qwen3-4B text
    encoder in bfloat16 put in its place, unless `tiny`."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sdtui.devtools.tiny_klein import write_tiny_klein

    if out.exists():
        return out
    write_tiny_klein(out, "distilled")
    if tiny:
        return out
    vocab = json.loads((out / "text_encoder" / "config.json").read_text())["vocab_size"]
    bf16 = floats(torch.bfloat16)
    with torch.device("meta"):
        transformer = Flux2Transformer2DModel(**KLEIN_4B)
        vae = AutoencoderKLFlux2()
        encoder = Qwen3ForCausalLM(Qwen3Config(**{**QWEN3_4B, "vocab_size": vocab}))
    _replace_component(out, "transformer", KLEIN_4B, shapes_of(transformer, bf16),
                       "diffusion_pytorch_model.safetensors", 5)
    vae_config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    _replace_component(out, "vae", vae_config, shapes_of(vae, bf16),
                       "diffusion_pytorch_model.safetensors", 6)
    # The tiny tokenizer's vocabulary, not Qwen3's 151,936 rows: the text encoder is not what
    # is measured, and its embedding would be 0.8 GB of rows no token reaches.
    if qwen3:
        _replace_component(out, "text_encoder", {**QWEN3_4B, "vocab_size": vocab},
                           shapes_of(encoder, bf16, skip=("lm_head.weight",)),
                           "model.safetensors", 7)
    return out


def remove(path: Path) -> None:
    """A written file or folder (and a file's sidecar), to free the disk between rows."""
    import shutil

    for target in (path, path.with_name(path.stem + ".config")):
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            os.unlink(target)
