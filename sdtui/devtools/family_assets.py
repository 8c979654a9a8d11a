"""Derive the SD 2.x and SDXL configs and tokenizer settings shipped in sdtui/assets/ from
their upstream sources, as the SD 1.x tokenizer is derived by sdtui.devtools.clip_vocab.

    python -m sdtui.devtools.family_assets [--check]

Sources (see sdtui/assets/SOURCES.md for commits and licences):
- UNet and VAE: the original inference configs, vendored unmodified beside their output
  (`sd2/v2-inference-v.yaml` from Stability-AI/stablediffusion, `sdxl/sd_xl_base.yaml` from
  Stability-AI/generative-models, both MIT), turned into diffusers configs by diffusers' own
  single-file converter functions.
- Text encoders: the text towers of open_clip's model configs (`ViT-H-14`, `ViT-bigG-14`,
  `ViT-L-14-quickgelu`, MIT, inside the open-clip-torch wheel), cut to the layers each family
  conditions on (the yaml's `layer: penultimate` / `layer_idx: 11`).
- Tokenizers: the one CLIP BPE table (sd1/tokenizer, derived by clip_vocab). OpenCLIP's own
  tokenizer pads with token 0 ("!"), OpenAI CLIP's pads with <|endoftext|>; each tokenizer
  folder here holds only its settings, the loader shares the vocabulary.
- Scheduler: the training noise schedule from the yaml (linear_start/end, timesteps; SGM's
  LegacyDDPMDiscretization defaults), with the DDIM offset of 1 SD tools use.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sdtui.devtools.clip_vocab import open_clip_bpe_path
from sdtui.worker.families.base import ASSETS

YAML = {"sd2": "v2-inference-v.yaml", "sdxl": "sd_xl_base.yaml"}
SIZE = {"sd2": 768, "sdxl": 1024}
# The text towers each family conditions on: (component, open_clip config, layers dropped
# from the end because the family reads an earlier layer through the final layer norm,
# with the projection to the pooled embedding).
TEXT = {
    "sd2": [("text_encoder", "ViT-H-14", 1, False)],
    "sdxl": [("text_encoder", "ViT-L-14-quickgelu", 0, False),
             ("text_encoder_2", "ViT-bigG-14", 0, True)],
}
TOKENIZERS = {"sd2": {"tokenizer": "!"}, "sdxl": {"tokenizer": "<|endoftext|>",
                                                  "tokenizer_2": "!"}}
PIPELINE = {"sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
# SGM's LegacyDDPMDiscretization defaults, for configs (SDXL's) that do not spell them out.
LEGACY_DDPM = {"linear_start": 0.00085, "linear_end": 0.0120, "timesteps": 1000}


def original_config(family: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ASSETS / family / YAML[family]).read_text())


def _prediction(original: dict[str, Any]) -> str:
    from sdtui.worker.ldm import yaml_prediction

    return yaml_prediction(original)


def unet_vae(family: str) -> dict[str, dict[str, Any]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    original = original_config(family)
    unet = create_unet_diffusers_config_from_ldm(original, {})
    vae = create_vae_diffusers_config_from_ldm(original, {})
    unet["sample_size"], vae["sample_size"] = SIZE[family] // 8, SIZE[family]
    if family == "sd2":
        # SD 2.x's attention computes q·k in float32 (ATTN_PRECISION "fp32" in the
        # stablediffusion repo's ldm/modules/attention.py); the 768 v model needs it in fp16.
        unet["upcast_attention"] = True
    if family == "sdxl":
        vae["force_upcast"] = True  # its VAE overflows in float16
    # Every key the model class takes, defaults included, so the files read like diffusers'.
    return {
        "unet": {"_class_name": "UNet2DConditionModel", **_full(UNet2DConditionModel, unet)},
        "vae": {"_class_name": "AutoencoderKL", **_full(AutoencoderKL, vae)},
    }


def _full(cls: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The config with the class's defaults filled in, as save_config would write it."""
    import torch

    with torch.device("meta"):
        model = cls.from_config(config)
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def text_encoder(name: str, layers_dropped: int, projection: bool, pad: str) -> dict[str, Any]:
    spec = json.loads((open_clip_bpe_path().parent / "model_configs" / f"{name}.json")
                      .read_text())
    text = spec["text_cfg"]
    return {
        "architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "hidden_act": "quick_gelu" if spec.get("quick_gelu") else "gelu",
        "hidden_size": text["width"],
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": text["width"] * 4,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": text["context_length"],
        "model_type": "clip_text_model",
        "num_attention_heads": text["heads"],
        "num_hidden_layers": text["layers"] - layers_dropped,
        "pad_token_id": 0 if pad == "!" else 49407,
        "projection_dim": spec["embed_dim"],
        "vocab_size": text["vocab_size"],
    }


def tokenizer(pad: str) -> dict[str, Any]:
    return {
        "add_prefix_space": False,
        "bos_token": "<|startoftext|>",
        "do_lower_case": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }


def scheduler(family: str) -> dict[str, Any]:
    original = original_config(family)["model"]["params"]
    schedule = {k: original.get(k, v) for k, v in LEGACY_DDPM.items()}
    return {
        "_class_name": "EulerDiscreteScheduler",
        "beta_end": schedule["linear_end"],
        "beta_schedule": "scaled_linear",
        "beta_start": schedule["linear_start"],
        "clip_sample": False,
        "num_train_timesteps": schedule["timesteps"],
        "prediction_type": _prediction(original_config(family)),
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }


def model_index(family: str) -> dict[str, Any]:
    index: dict[str, Any] = {"_class_name": PIPELINE[family]}
    for name, _, _, projection in TEXT[family]:
        index[name] = ["transformers", "CLIPTextModelWithProjection" if projection
                       else "CLIPTextModel"]
    for name in TOKENIZERS[family]:
        index[name] = ["transformers", "CLIPTokenizer"]
    index.update(unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"],
                 scheduler=["diffusers", "EulerDiscreteScheduler"])
    return index


def derive(family: str) -> dict[str, dict[str, Any]]:
    """Relative path under sdtui/assets/<family>/ -> JSON content."""
    files = {"model_index.json": model_index(family),
             "scheduler/scheduler_config.json": scheduler(family)}
    for kind, config in unet_vae(family).items():
        files[f"{kind}/config.json"] = config
    pads = list(TOKENIZERS[family].values())
    for (name, source, dropped, projection), pad in zip(TEXT[family], pads, strict=True):
        files[f"{name}/config.json"] = text_encoder(source, dropped, projection, pad)
    for name, pad in TOKENIZERS[family].items():
        files[f"{name}/tokenizer_config.json"] = tokenizer(pad)
    return files


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for family in YAML:
        for relative, content in derive(family).items():
            path = ASSETS / family / relative
            text = render(content)
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
