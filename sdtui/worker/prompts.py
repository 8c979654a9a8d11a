"""Weighted prompts through compel: `(word:1.3)` and the guide's `a:0.3 b:0.7` blends.

Prompts longer than CLIP's 77 tokens are not cut: compel encodes them in 77-token chunks and
the two conditionings are padded to the same length.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from sdtui.prompt_parts import guide_blend

# A1111's `(text:1.3)` becomes compel's `(text)1.3`.
_A1111_WEIGHT = re.compile(r"\(([^()]+?):\s*([0-9]*\.?[0-9]+)\s*\)")


def to_compel(prompt: str) -> str:
    """The prompt in compel's syntax."""
    blend = guide_blend(prompt)
    if blend and len(blend) > 1:
        texts = ", ".join('"' + text.replace('"', "'") + '"' for text, _ in blend)
        weights = ", ".join(f"{weight:g}" for _, weight in blend)
        return f"({texts}).blend({weights})"
    if blend:  # a single `text:weight` is a weighted prompt
        text, weight = blend[0]
        return f"({text}){weight:g}"
    return _A1111_WEIGHT.sub(lambda m: f"({m.group(1)}){m.group(2)}", prompt)


class PromptEncoder:
    """A prompt and its negative as the pipeline's embedding arguments. SDXL's go through both
    text encoders (compel's SDXL mode) and add the pooled embeddings."""

    def __init__(self, pipe: Any, family: str = "sd1") -> None:
        from compel import Compel, CompelForSDXL

        self.sdxl = family == "sdxl"
        if self.sdxl:
            self.compel_sdxl = CompelForSDXL(pipe)
        else:
            self.compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                 truncate_long_prompts=False)

    def encode(self, prompt: str, negative: str) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            if self.sdxl:
                return self._encode_sdxl(prompt, negative)
            positive = self.compel(to_compel(prompt))
            negative_embeds = self.compel(to_compel(negative))
            positive, negative_embeds = self.compel.pad_conditioning_tensors_to_same_length(
                [positive, negative_embeds])
            return {"prompt_embeds": positive, "negative_prompt_embeds": negative_embeds}

    def _encode_sdxl(self, prompt: str, negative: str) -> dict[str, torch.Tensor]:
        out = self.compel_sdxl(to_compel(prompt), negative_prompt=to_compel(negative))
        embeds = {"prompt_embeds": out.embeds, "pooled_prompt_embeds": out.pooled_embeds,
                  "negative_prompt_embeds": out.negative_embeds,
                  "negative_pooled_prompt_embeds": out.negative_pooled_embeds}
        if not negative.strip():
            # An empty negative prompt is zeros for SDXL, in diffusers (force_zeros_for_empty_
            # prompt) and in A1111 alike.
            for name in ("negative_prompt_embeds", "negative_pooled_prompt_embeds"):
                embeds[name] = torch.zeros_like(embeds[name])
        return embeds


class PipelinePrompts:
    """A prompt through the pipeline's own encode_prompt, as its pipelines encode it (no
    weights): FLUX.1's CLIP (pooled) and T5 (T5 reads 512 tokens); FLUX.2 Klein's Qwen3 (512);
    SD 3.5's CLIP-L and CLIP-G (pooled) and T5 (256). A model with classifier-free guidance
    encodes the negative prompt too, "" when none is given, as its pipeline does: SD 3.5's
    encode_prompt takes both at once, Klein base's is called again."""

    def __init__(self, pipe: Any, cfg: bool = False) -> None:
        import inspect

        self.pipe = pipe
        self.cfg = cfg
        self.joint = "negative_prompt" in inspect.signature(pipe.encode_prompt).parameters

    def encode(self, prompt: str, negative: str) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            if self.joint:
                embeds, negative_embeds, pooled, negative_pooled = self.pipe.encode_prompt(
                    prompt=prompt, prompt_2=None, prompt_3=None, negative_prompt=negative,
                    do_classifier_free_guidance=True)
                return {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds,
                        "pooled_prompt_embeds": pooled,
                        "negative_pooled_prompt_embeds": negative_pooled}
            out = self.pipe.encode_prompt(prompt=prompt)
            embeds = {"prompt_embeds": out[0]}
            if len(out) == 3:  # FLUX.1: (T5 embeds, pooled CLIP, text ids)
                embeds["pooled_prompt_embeds"] = out[1]
            if self.cfg:
                embeds["negative_prompt_embeds"] = self.pipe.encode_prompt(prompt=negative)[0]
        return embeds
