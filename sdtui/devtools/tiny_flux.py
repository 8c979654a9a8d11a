"""Write a tiny, randomly initialised FLUX.1 diffusers folder ([schnell] or [dev]) for tests: a
few MB, deterministic by seed, loadable offline.

    python -m sdtui.devtools.tiny_flux OUT [--variant schnell|dev] [--seed N]

Every component is diffusers' or transformers' own class in the shapes diffusers' fast tests
use (tests/pipelines/flux/test_pipeline_flux.py): a `FluxTransformer2DModel` with two double
and two single blocks, a CLIP-L-layout `CLIPTextModel` and a T5 v1.1-layout (gated GELU)
`T5EncoderModel`, 32 wide, and an `AutoencoderKL` with FLUX's 16 latent channels, its scaling
and shift factors and the real four-level ×8 downscale. [dev] differs from [schnell] as the
real ones do: its transformer embeds guidance (`guidance_embeds: true`) and its scheduler
shifts by resolution (`use_dynamic_shifting`).

Tokenizers: CLIP's is the real 49,408-token vocabulary shipped in sdtui's assets; T5's is a
small Unigram vocabulary built here with the `tokenizers` package (T5's special tokens and ids:
<pad> 0, </s> 1, <unk> 2), saved as a `T5TokenizerFast` - no network, no sentencepiece.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

from sdtui.devtools.pipeline_folders import save_new, variant_main

VARIANTS = ("schnell", "dev")

TINY_FLUX_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 2, "num_single_layers": 2,
    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
    "pooled_projection_dim": 32, "axes_dims_rope": [4, 4, 8],
}
TINY_FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32,
    "sample_size": 64, "use_quant_conv": False, "use_post_quant_conv": False,
    # FLUX.1's own ae.safetensors values.
    "scaling_factor": 0.3611, "shift_factor": 0.1159, "force_upcast": True,
}
TINY_CLIP = {
    "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
    "num_hidden_layers": 2, "projection_dim": 32, "hidden_act": "quick_gelu",
    "max_position_embeddings": 77, "vocab_size": 49408, "bos_token_id": 49406,
    "eos_token_id": 49407, "pad_token_id": 49407,
}
TINY_T5 = {
    "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4,
    "relative_attention_num_buckets": 8, "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new", "is_gated_act": True, "tie_word_embeddings": False,
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}
# The real schedulers' configs (black-forest-labs/FLUX.1-*/scheduler/scheduler_config.json).
SCHEDULERS = {
    "schnell": {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False,
                "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                "max_image_seq_len": 4096},
    "dev": {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
            "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
            "max_image_seq_len": 4096},
}
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
_T5_WORDS = ("a", "an", "the", "of", "in", "on", "with", "and", "photo", "cat", "dog", "red",
             "blue", "green", "house", "tree", "sky", "sea", "mountain", "portrait", "painting",
             "lighthouse", "city", "night", "sun", "moon", "flower", "car", "robot", "astronaut")


def t5_tokenizer() -> Any:
    """A small T5-style tokenizer (Unigram pieces behind T5's Metaspace pre-tokenizer, `</s>`
    appended), as transformers' T5TokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [(token, 0.0) for token in T5_SPECIALS]
    pieces += [("\u2581" + word, -2.0) for word in _T5_WORDS]
    pieces += [("\u2581", -3.0)]
    pieces += [(char, -5.0) for char in string.ascii_letters + string.digits + string.punctuation]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                           unk_token="<unk>", extra_ids=0, model_max_length=512)


def build_tiny_flux_pipeline(seed: int = 0, variant: str = "schnell") -> Any:
    """A FluxPipeline of random weights, deterministic by seed."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    from sdtui.worker.families.base import ASSETS

    if variant not in VARIANTS:
        raise ValueError(f"unknown FLUX.1 variant {variant!r}; pick one of {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TINY_FLUX_TRANSFORMER,
                                         guidance_embeds=variant == "dev")
    vae = AutoencoderKL(**TINY_FLUX_VAE)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_CLIP)).eval()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer()), **TINY_T5)).eval()
    return FluxPipeline(
        transformer=transformer, vae=vae, text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(ASSETS / "sd1" / "tokenizer"),
        text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS[variant]))


def write_tiny_flux(out: Path | str, variant: str = "schnell", seed: int = 0) -> Path:
    """A tiny FLUX.1 [schnell] or [dev] diffusers folder at OUT (created; must not exist)."""
    return save_new(out, lambda: build_tiny_flux_pipeline(seed, variant))


def main(argv: list[str] | None = None) -> None:
    variant_main(__doc__, VARIANTS, write_tiny_flux, argv)


if __name__ == "__main__":
    main()
