"""FLUX.1's pipeline components from a split set (sdtui.modelsets): the transformer
(sdtui.worker.flux_files), CLIP-L from `clip_l.safetensors` and T5-XXL from a
`t5xxl_*.safetensors` (transformers' own key layout, as ComfyUI's files keep them), and the VAE
from `ae.safetensors` (BFL's autoencoder layout, mapped by diffusers' converter); or the same
four from one all-in-one checkpoint, each under its prefix (AIO_PARTS).

Every file is read by sdtui's safetensors reader: no pickle, and fp8-stored weights are upcast
tensor by tensor to the compute dtype as they are read. Configurations come from the tensors'
shapes; what the weights cannot say (CLIP's head count, the VAE's scaling and shift) is FLUX.1's
own unless the transformer's `S.config/` sidecar holds `text_encoder/config.json` or
`vae/config.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sdtui.errors import BadInput
from sdtui.modelsets import ModelSet, find_set
from sdtui.worker.checkpoint import Checkpoint, ModelInvalid
from sdtui.worker.flux_files import ORIGINAL_PREFIX, load_transformer

# What FLUX.1's released files use where the weights do not say (black-forest-labs/FLUX.1-dev:
# text_encoder/config.json, vae/config.json).
CLIP_L = {"num_attention_heads": 12, "hidden_act": "quick_gelu", "bos_token_id": 49406,
          "eos_token_id": 49407, "pad_token_id": 1}
# Where an all-in-one checkpoint keeps each component (ComfyUI's layout).
AIO_PARTS = {"transformer": ORIGINAL_PREFIX,
             "CLIP-L text encoder": "text_encoders.clip_l.transformer.",
             "T5-XXL text encoder": "text_encoders.t5xxl.transformer.", "VAE": "vae."}
T5_GGUF = "t5encoder"
AE = {"scaling_factor": 0.3611, "shift_factor": 0.1159, "force_upcast": True,
      "norm_num_groups": 32}


def sidecar_config(transformer: Path, component: str) -> dict[str, Any]:
    file = transformer.with_name(transformer.stem + ".config") / component / "config.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        raise ModelInvalid(f"{file} is not a readable JSON config") from None


def _read(path: Path, dtype: torch.dtype,
          prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors under `prefix` (all of a component's own file), named without it."""
    checkpoint = Checkpoint(path, "safetensors")
    state = checkpoint.read(lambda key: key.startswith(prefix), dtype)
    return ({key.removeprefix(prefix): value for key, value in state.items()},
            {key.removeprefix(prefix): shape for key, shape in checkpoint.shapes.items()
             if key.startswith(prefix)})


def _count(shapes: dict[str, Any], prefix: str) -> int:
    return 1 + max((int(key[len(prefix):].split(".")[0]) for key in shapes
                    if key.startswith(prefix)), default=-1)


def _shape(path: Path, shapes: dict[str, Any], key: str, what: str) -> tuple[int, ...]:
    for name in (key, "text_model." + key):
        if name in shapes:
            return shapes[name]
    raise ModelInvalid(f"model file {path} is not a {what} in transformers' layout: it has "
                       f"no {key}", family="flux1")


def clip_config(path: Path, shapes: dict[str, Any]) -> dict[str, Any]:
    what = "CLIP-L text encoder"
    vocab, hidden = _shape(path, shapes, "embeddings.token_embedding.weight", what)
    unprefixed = {key.removeprefix("text_model."): shape for key, shape in shapes.items()}
    projection = shapes.get("text_projection.weight")
    return {**CLIP_L, "vocab_size": vocab, "hidden_size": hidden,
            **({"projection_dim": projection[0]} if projection else {}),
            "max_position_embeddings": _shape(
                path, shapes, "embeddings.position_embedding.weight", what)[0],
            "intermediate_size": _shape(path, shapes, "encoder.layers.0.mlp.fc1.weight", what)[0],
            "num_hidden_layers": _count(unprefixed, "encoder.layers.")}


def clip_l(path: Path, dtype: torch.dtype, overrides: dict[str, Any], prefix: str = "",
           with_projection: bool = False) -> Any:
    """A CLIP text encoder; with its text projection (SD 3.5's pooled embeddings) if asked."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    state, shapes = _read(path, dtype, prefix)
    config = CLIPTextConfig(**{**clip_config(path, shapes), **overrides})
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls.from_pretrained(None, config=config, state_dict=state, dtype=dtype).eval()


def t5_config(path: Path, shapes: dict[str, Any]) -> dict[str, Any]:
    what = "T5-XXL text encoder"
    block = "encoder.block.0.layer."
    vocab, width = _shape(path, shapes, "shared.weight", what)
    buckets, heads = _shape(path, shapes, block + "0.SelfAttention.relative_attention_bias.weight",
                            what)
    gated = block + "1.DenseReluDense.wi_0.weight" in shapes
    feed = "wi_0" if gated else "wi"
    return {"vocab_size": vocab, "d_model": width, "num_heads": heads,
            "relative_attention_num_buckets": buckets,
            "d_kv": _shape(path, shapes, block + "0.SelfAttention.q.weight", what)[0] // heads,
            "d_ff": _shape(path, shapes, f"{block}1.DenseReluDense.{feed}.weight", what)[0],
            "num_layers": _count(shapes, "encoder.block."), "is_encoder_decoder": False,
            "feed_forward_proj": "gated-gelu" if gated else "relu",
            "tie_word_embeddings": False}


def t5_encoder(path: Path, dtype: torch.dtype, prefix: str = "") -> Any:
    """T5-XXL; a t5xxl_fp8_e4m3fn file's fp8 matrices stay fp8 in memory
    (sdtui.worker.fp8_storage), each block's upcast while it computes."""
    from transformers import T5Config, T5EncoderModel

    from sdtui.worker.checkpoint import safetensors_header
    from sdtui.worker.fp8_storage import is_fp8, upcast_per_block

    header, _ = safetensors_header(path)
    fp8 = {key for key, entry in header.items() if key.startswith(prefix) and isinstance(
        entry, dict) and entry.get("dtype", "").startswith("F8_") and not key.endswith(
        "shared.weight")}  # the embedding is read whole: it is no block's
    if not fp8:
        state, shapes = _read(path, dtype, prefix)
        return T5EncoderModel.from_pretrained(None, config=T5Config(**t5_config(path, shapes)),
                                              state_dict=state, dtype=dtype).eval()
    checkpoint = Checkpoint(path, "safetensors")
    shapes = {key.removeprefix(prefix): shape for key, shape in checkpoint.shapes.items()
              if key.startswith(prefix)}
    state = checkpoint.read(lambda key: key.startswith(prefix) and key not in fp8, dtype)
    stored = read_as_stored(checkpoint, fp8)
    state = {key.removeprefix(prefix): value for key, value in {**state, **stored}.items()}
    with torch.device("meta"):
        model = T5EncoderModel(T5Config(**t5_config(path, shapes)))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.encoder.embed_tokens.weight = model.shared.weight  # tied, as from_pretrained ties
    absent = set(missing) - {"encoder.embed_tokens.weight"}
    if absent or unexpected:
        raise ModelInvalid(f"model file {path} is not a T5-XXL text encoder in transformers' "
                           f"layout: {len(absent)} weights missing, {len(unexpected)} unknown",
                           family="flux1")
    for param in model.parameters():
        if param.dtype != dtype and not is_fp8(param.dtype):
            param.data = param.data.to(dtype)
    # transformers keeps T5's `wo` in float32 when it computes in float16
    # (T5PreTrainedModel._keep_in_fp32_modules): its activations overflow float16.
    upcast_per_block(model.encoder.block, dtype,
                     keep_fp32=(".wo.weight",) if dtype == torch.float16 else ())
    return model.eval()


def read_as_stored(checkpoint: Checkpoint, names: set[str]) -> dict[str, torch.Tensor]:
    """The named tensors in the dtype the file stores them in (one read per stored dtype)."""
    from sdtui.worker.checkpoint import SAFETENSORS_DTYPES, safetensors_header

    header, _ = safetensors_header(checkpoint.path)
    kinds = {SAFETENSORS_DTYPES[header[name]["dtype"]] for name in names}
    out: dict[str, torch.Tensor] = {}
    for kind in kinds:
        out.update(checkpoint.read(lambda key, kind=kind: key in names and SAFETENSORS_DTYPES[
            header[key]["dtype"]] == kind, kind))
    return out


def t5_gguf(path: Path, dtype: torch.dtype) -> Any:
    """T5-XXL from a .gguf (city96's t5-v1_1-xxl-encoder-Q8_0.gguf: llama.cpp's 't5encoder'
    layout), through transformers' GGUF loader, which dequantizes it whole: the text encoders
    sit off the GPU while the transformer denoises."""
    from transformers import T5Config, T5EncoderModel

    from sdtui.worker.gguf_files import read_architecture

    tensors = read_architecture(path, T5_GGUF, "a T5 encoder",
                                "T5-XXL encoders as GGUF (llama.cpp's 't5encoder' layout)")
    config = T5Config.from_pretrained(path.parent, gguf_file=path.name)
    # transformers maps a GGUF T5's feed-forward as the original T5's ReLU; FLUX's T5 v1.1 is
    # gated GELU, which the file shows by its ffn_gate tensors.
    if any(name.endswith("ffn_gate.weight") for name in tensors):
        config.feed_forward_proj, config.dense_act_fn, config.is_gated_act = (
            "gated-gelu", "gelu_new", True)
    return T5EncoderModel.from_pretrained(path.parent, gguf_file=path.name, config=config,
                                          dtype=dtype).eval()


# Where each VAE key layout keeps the encoder's levels and their resnet blocks, and its name.
VAE_LAYOUTS = {"ldm": ("encoder.down.", "block", "VAE in BFL's autoencoder layout"),
               "diffusers": ("encoder.down_blocks.", "resnets", "VAE in diffusers' layout")}


def vae_config(path: Path, shapes: dict[str, Any], layout: str = "ldm") -> dict[str, Any]:
    down, blocks, what = VAE_LAYOUTS[layout]
    levels = _count(shapes, down)
    if not levels:
        raise ModelInvalid(f"model file {path} is not a {what}: it has no {down.rstrip('.')} "
                           f"blocks", family="flux1")
    return {
        **AE,
        "in_channels": _shape(path, shapes, "encoder.conv_in.weight", what)[1],
        "out_channels": _shape(path, shapes, "decoder.conv_out.weight", what)[0],
        "latent_channels": _shape(path, shapes, "decoder.conv_in.weight", what)[1],
        "block_out_channels": [shapes[f"{down}{i}.{blocks}.0.conv1.weight"][0]
                               for i in range(levels)],
        "layers_per_block": _count(shapes, f"{down}0.{blocks}."),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
    }


def vae(path: Path, dtype: torch.dtype, overrides: dict[str, Any], prefix: str = "") -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    state, shapes = _read(path, dtype, prefix)
    config = {**vae_config(path, shapes), **overrides}
    model = AutoencoderKL.from_config(config)
    model.load_state_dict(convert_ldm_vae_checkpoint(state, config), strict=True)
    return model.to(dtype).eval()


def any_vae(path: Path, dtype: torch.dtype, overrides: dict[str, Any], prefix: str = "") -> Any:
    """A VAE in the LDM layout (vae()), or in diffusers' own (a Hub repo's
    vae/diffusion_pytorch_model.safetensors kept under another name), loaded as it is."""
    from diffusers import AutoencoderKL

    shapes = Checkpoint(path, "safetensors").shapes
    if not any(key.startswith(prefix + "encoder.down_blocks.") for key in shapes):
        return vae(path, dtype, overrides, prefix)
    state, shapes = _read(path, dtype, prefix)
    model = AutoencoderKL.from_config({**vae_config(path, shapes, "diffusers"), **overrides})
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


def all_in_one(path: Path, dtype: torch.dtype) -> dict[str, Any]:
    """The components of an all-in-one checkpoint (ComfyUI's layout: the transformer under
    model.diffusion_model., the text encoders under text_encoders.clip_l.transformer. and
    text_encoders.t5xxl.transformer., the VAE under vae.)."""
    shapes = Checkpoint(path, "safetensors").shapes
    missing = [label for label, prefix in AIO_PARTS.items()
               if not any(key.startswith(prefix) for key in shapes)]
    if missing:
        raise ModelInvalid(f"model file {path} is an incomplete FLUX.1 all-in-one checkpoint: "
                           f"it has no {', '.join(missing)} weights; put clip_l.safetensors, a "
                           "t5xxl_*.safetensors and ae.safetensors beside a transformer file "
                           "instead", family="flux1")
    return {
        "transformer": load_transformer(path, dtype, "safetensors"),
        "text_encoder": clip_l(path, dtype, sidecar_config(path, "text_encoder"),
                               AIO_PARTS["CLIP-L text encoder"]),
        "text_encoder_2": t5_encoder(path, dtype, AIO_PARTS["T5-XXL text encoder"]),
        "vae": vae(path, dtype, sidecar_config(path, "vae"), AIO_PARTS["VAE"]),
    }


def is_all_in_one(file: Path) -> bool:
    return file.is_file() and file.suffix.lower() == ".safetensors" and any(
        key.startswith(ORIGINAL_PREFIX) for key in Checkpoint(file, "safetensors").shapes)


def _find_set(path: str | Path) -> ModelSet:
    try:
        model_set = find_set(path)
    except BadInput as error:
        raise ModelInvalid(str(error), family="flux1") from None
    if model_set is None or model_set.family != "flux1":
        raise ModelInvalid(f"model {path} is not a FLUX.1 set: no FLUX.1 transformer "
                           "(.safetensors in BFL's layout or a 'flux' .gguf) there")
    return model_set


def configured_file(path: str | Path) -> Path:
    """The file whose `S.config/` sidecar configures the FLUX.1 files at `path`: an all-in-one
    file itself, else the set's transformer file."""
    file = Path(path)
    return file if is_all_in_one(file) else _find_set(path).transformer


def components_from_files(path: str | Path, dtype: torch.dtype) -> dict[str, Any]:
    """The FLUX.1 components the files at `path` hold: a split set (its folder or its
    transformer file) or an all-in-one checkpoint. transformer, text_encoder (CLIP-L),
    text_encoder_2 (T5-XXL) and vae, computing in `dtype`. Tokenizers and the scheduler come
    from the family's configs, not from these files."""
    file = Path(path)
    if is_all_in_one(file):
        return all_in_one(file, dtype)
    model_set = _find_set(path)
    fmt = model_set.transformer.suffix.lower().lstrip(".")
    parts = model_set.parts
    return {
        "transformer": load_transformer(model_set.transformer, dtype, fmt),
        "text_encoder": clip_l(parts["text_encoder"], dtype,
                               sidecar_config(model_set.transformer, "text_encoder")),
        "text_encoder_2": (t5_gguf if parts["text_encoder_2"].suffix.lower() == ".gguf"
                           else t5_encoder)(parts["text_encoder_2"], dtype),
        "vae": vae(parts["vae"], dtype, sidecar_config(model_set.transformer, "vae")),
    }
