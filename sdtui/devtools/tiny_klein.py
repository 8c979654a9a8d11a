"""Write a tiny, randomly initialised FLUX.2 Klein diffusers folder for tests: a few MB,
deterministic by seed, loadable offline.

    python -m sdtui.devtools.tiny_klein OUT [--variant distilled|base] [--seed N]

Every component is diffusers' or transformers' own class, in the shapes diffusers' fast tests
use (tests/pipelines/flux2/test_pipeline_flux2_klein.py at v0.42.1): a `Flux2Transformer2DModel`
with one double and one single block, 16-wide heads and 4-axis RoPE; a `Qwen3ForCausalLM` 16
wide. Two things are the real model's rather than the fast test's, because sdtui runs the
pipeline's defaults: the text encoder has the 28 layers the pipeline reads hidden states 9, 18
and 27 of (so the transformer's joint_attention_dim is 3 x 16), and the `AutoencoderKLFlux2`
has FLUX.2's 32 latent channels and the real four-level x8 downscale (the transformer takes
them 2x2-patchified: 128 channels). `distilled` (FLUX.2 [klein] 4B) differs from `base`
(FLUX.2 [klein] base 4B) as the real ones do: `is_distilled` in model_index.json, which turns
classifier-free guidance off.

Tokenizer: a byte-level BPE in Qwen2's layout (vocab.json + merges.txt written here: the 256
byte symbols, a few merges, Qwen's <|endoftext|>, <|im_start|>, <|im_end|>), saved as a
`Qwen2TokenizerFast` with the part of Qwen3's chat template the pipeline renders (one user turn,
thinking off) - no network.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from sdtui.devtools.pipeline_folders import save_new, variant_main

VARIANTS = ("distilled", "base")

TINY_KLEIN_TRANSFORMER = {
    "patch_size": 1, "in_channels": 128, "num_layers": 1, "num_single_layers": 1,
    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 48,
    "timestep_guidance_channels": 256, "axes_dims_rope": [4, 4, 4, 4], "guidance_embeds": False,
}
TINY_KLEIN_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 8,
    "sample_size": 64, "use_quant_conv": False, "use_post_quant_conv": False,
}
TINY_QWEN3 = {
    "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 28,
    "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8,
    "max_position_embeddings": 512, "tie_word_embeddings": True,
}
# black-forest-labs/FLUX.2-klein-4B/scheduler/scheduler_config.json.
SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
             "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
             "max_image_seq_len": 4096, "time_shift_type": "exponential"}
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen3's chat template as the pipeline renders it: one user message, generation prompt, no
# thinking (tokenizer_config.json of Qwen/Qwen3-4B, reduced to that path).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}")
_MERGES = (("Ġ", "a"), ("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġt", "he"), ("o", "r"),
           ("e", "r"), ("Ġ", "c"), ("a", "t"), ("Ġc", "at"))


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order (what byte-level BPE's
    vocabularies, Qwen2's included, are built on)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def write_qwen_tokenizer(out: Path) -> Any:
    """vocab.json + merges.txt in Qwen2's byte-level BPE layout, loaded as Qwen2TokenizerFast."""
    from transformers import Qwen2TokenizerFast

    tokens = _byte_symbols() + ["".join(pair) for pair in _MERGES]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
    tokenizer = Qwen2TokenizerFast(
        vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), unk_token=None,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=131072)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_klein_pipeline(seed: int = 0, variant: str = "distilled") -> Any:
    """A Flux2KleinPipeline of random weights, deterministic by seed."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if variant not in VARIANTS:
        raise ValueError(f"unknown FLUX.2 Klein variant {variant!r}; pick one of "
                         f"{', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = write_qwen_tokenizer(Path(scratch))
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(**TINY_KLEIN_TRANSFORMER)
    vae = AutoencoderKLFlux2(**TINY_KLEIN_VAE)
    # Random batch-norm statistics, as a trained VAE has (fresh ones are mean 0, variance 1,
    # which would hide a missing (de)normalisation).
    vae.bn.running_mean.copy_(torch.randn_like(vae.bn.running_mean) * 0.1)
    vae.bn.running_var.copy_(torch.rand_like(vae.bn.running_var) + 0.5)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tokenizer), **TINY_QWEN3)).eval()
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
        is_distilled=variant == "distilled")


def write_tiny_klein(out: Path | str, variant: str = "distilled", seed: int = 0) -> Path:
    """A tiny FLUX.2 Klein diffusers folder at OUT (created; must not exist)."""
    return save_new(out, lambda: build_tiny_klein_pipeline(seed, variant))


def main(argv: list[str] | None = None) -> None:
    variant_main(__doc__, VARIANTS, write_tiny_klein, argv)


if __name__ == "__main__":
    main()
