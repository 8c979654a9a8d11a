"""Building diffusers components from a single-file checkpoint's tensors (the original LDM/SGM
key layout), for every family: config sources, key conversion, strict loading.

Configs for each component C of a checkpoint FILE with stem S come from the first of:
  1. `S.config/C/` beside the file (a diffusers-layout folder: configs and tokenizers only);
  2. for unet and vae: `S.yaml` beside the file (the original LDM/SGM config);
  3. the family's shipped assets, `sdtui/assets/<family>/C/`.

Components are built on the meta device and take the checkpoint's tensors as they are
(`assign`), so no random initialisation runs and nothing is copied: renamed keys, 1×1-conv
slices and OpenCLIP's fused q/k/v rows are views of the tensors read from the file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdtui.modelfiles import CONFIG_DIR_SUFFIX, YAML_SUFFIX
from sdtui.worker.checkpoint import ModelInvalid
from sdtui.worker.families import EPSILON, V_PREDICTION, Family, TextEncoder
from sdtui.worker.families.base import ASSETS, UNET_CONV_IN, UNET_PREFIX, VAE_PREFIX

log = logging.getLogger(__name__)

# The CLIP BPE table every family's tokenizers share (see sdtui.devtools.clip_vocab); a shipped
# tokenizer folder without its own vocab.json/merges.txt uses these.
SHARED_VOCAB = ASSETS / "sd1" / "tokenizer"


@dataclass
class ConfigSources:
    """Where each component's config comes from; see the module docstring for the rule."""

    checkpoint: Path
    family: Family
    config_dir: Path | None
    original_yaml: Path | None

    @classmethod
    def beside(cls, checkpoint: Path, family: Family) -> ConfigSources:
        config_dir = checkpoint.with_name(checkpoint.stem + CONFIG_DIR_SUFFIX)
        original_yaml = checkpoint.with_name(checkpoint.stem + YAML_SUFFIX)
        return cls(
            checkpoint=checkpoint,
            family=family,
            config_dir=config_dir if config_dir.is_dir() else None,
            original_yaml=original_yaml if original_yaml.is_file() else None,
        )

    def sidecar(self, component: str) -> Path | None:
        if self.config_dir is not None and (self.config_dir / component).is_dir():
            return self.config_dir / component
        return None

    def folder(self, component: str) -> Path:
        return self.sidecar(component) or self.family.assets / component

    def uses_yaml(self, component: str) -> bool:
        return (self.original_yaml is not None and component in ("unet", "vae")
                and self.sidecar(component) is None)

    def yaml(self) -> dict[str, Any]:
        from diffusers.loaders.single_file_utils import fetch_original_config

        return fetch_original_config(str(self.original_yaml), local_files_only=True)

    def origin(self, component: str) -> tuple[str, str]:
        """(where the config came from, what to do when the weights do not fit it)."""
        if self.uses_yaml(component):
            return str(self.original_yaml), "the checkpoint is incomplete or not for it"
        if self.sidecar(component) is None:
            sidecar = self.checkpoint.stem + CONFIG_DIR_SUFFIX
            return (f"the shipped {self.family.label} configs",
                    f"a checkpoint with other dims needs {sidecar}/ beside it")
        return str(self.sidecar(component)), "the checkpoint is incomplete or not for it"


def yaml_prediction(original: dict[str, Any]) -> str:
    """The prediction type an LDM (`parameterization: "v"`) or SGM (`VScaling`) config names."""
    params = original.get("model", {}).get("params", {}) or {}
    if params.get("parameterization") == "v":
        return V_PREDICTION
    scaling = (((params.get("denoiser_config") or {}).get("params") or {})
               .get("scaling_config") or {}).get("target", "")
    return V_PREDICTION if str(scaling).endswith("VScaling") else EPSILON


# --- loading converted weights into a component built on the meta device ------------------


def build_from_meta(cls: Any, config: dict[str, Any]) -> Any:
    with torch.device("meta"):
        return cls.from_config(config)


def _storages(tensors: Any) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


class Loaded:
    """The checkpoint's tensors and which of them the built components use."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.used: set[int] = set()

    def load(self, model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str,
             sources: ConfigSources) -> torch.nn.Module:
        """Load converted `weights` into `model` (built on meta): every parameter must come
        from the checkpoint with its shape; weights the model has no place for are left out
        and reported later as unused."""
        expected = model.state_dict()
        missing = sorted(set(expected) - set(weights))
        misshapen = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
        if missing or misshapen:
            origin, hint = sources.origin(what)
            example = (missing or misshapen)[0]
            raise ModelInvalid(
                f"model file {sources.checkpoint} ({sources.family.label}): its {what} weights "
                f"do not fit the {what} config from {origin} ({len(missing)} missing, "
                f"{len(misshapen)} of another shape, e.g. {example}); {hint}",
                family=sources.family.id)
        fitting = {k: v for k, v in weights.items() if k in expected}
        model.load_state_dict(fitting, strict=True, assign=True)
        self.used |= _storages(fitting.values())
        return model

    def unused(self) -> list[str]:
        """Keys read from the file that no component took."""
        return sorted(k for k, t in self.state.items()
                      if t.untyped_storage().data_ptr() not in self.used)


# --- UNet and VAE ---------------------------------------------------------------------------


def ldm_component(kind: str, loaded: Loaded, sources: ConfigSources) -> Any:
    """The UNet or the VAE: its config from the sidecar folder, the .yaml or the family's
    assets, then the checkpoint's weights converted from the LDM layout by diffusers' own
    converters and loaded strictly."""
    import diffusers
    from diffusers.loaders import single_file_utils as sfu

    cls, config_from_ldm, convert = {
        "unet": (diffusers.UNet2DConditionModel, sfu.create_unet_diffusers_config_from_ldm,
                 sfu.convert_ldm_unet_checkpoint),
        "vae": (diffusers.AutoencoderKL, sfu.create_vae_diffusers_config_from_ldm,
                sfu.convert_ldm_vae_checkpoint),
    }[kind]
    state = loaded.state
    prefix = UNET_PREFIX if kind == "unet" else VAE_PREFIX
    own = {k: v for k, v in state.items() if k.startswith(prefix)}
    if sources.uses_yaml(kind):
        config = config_from_ldm(sources.yaml(), state)
    else:
        config = dict(cls.load_config(sources.folder(kind), local_files_only=True))
        if kind == "unet" and sources.sidecar(kind) is None and UNET_CONV_IN in state:
            config["in_channels"] = state[UNET_CONV_IN].shape[1]  # 9 for an inpainting UNet
    model = build_from_meta(cls, config)
    return loaded.load(model, convert(own, model.config), kind, sources)


# --- text encoders and tokenizers -----------------------------------------------------------

_OPEN_CLIP_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_OPEN_CLIP_BLOCK = (
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."), ("attn.out_proj.", "self_attn.out_proj."),
)


def open_clip_to_transformers(weights: dict[str, torch.Tensor], hidden: int
                              ) -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower keys (`transformer.resblocks.N...`, fused q/k/v) -> transformers'
    CLIP keys, as views (the small projection matrix excepted)."""
    out = {}
    for key, tensor in weights.items():
        if key in _OPEN_CLIP_TOP:
            out[_OPEN_CLIP_TOP[key]] = tensor
        elif key == "text_projection":  # OpenCLIP multiplies x @ P; a Linear stores P.T
            # A copy: a transposed view gives other float rounding than a diffusers folder.
            out["text_projection.weight"] = tensor.t().contiguous()
        elif key.startswith("transformer.resblocks."):
            index, rest = key.removeprefix("transformer.resblocks.").split(".", 1)
            base = f"text_model.encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")
                for i, name in enumerate("qkv"):
                    out[f"{base}self_attn.{name}_proj.{kind}"] = tensor[i * hidden:(i + 1) * hidden]
                continue
            for original, ours in _OPEN_CLIP_BLOCK:
                if rest.startswith(original):
                    rest = ours + rest[len(original):]
                    break
            out[base + rest] = tensor
        else:
            out[key] = tensor  # unknown: left for the unused-tensor report
    return out


def text_encoder(spec: TextEncoder, loaded: Loaded, sources: ConfigSources) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
    config = CLIPTextConfig.from_pretrained(sources.folder(spec.name), local_files_only=True)
    with torch.device("meta"):
        model = cls(config).eval()
    weights = {k[len(spec.prefix):]: v for k, v in loaded.state.items()
               if k.startswith(spec.prefix)}
    if spec.layout == "open_clip":
        weights = open_clip_to_transformers(weights, config.hidden_size)
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    loaded.load(model, weights, spec.name, sources)
    projection = loaded.state.get(spec.prefix + "text_projection")
    if spec.with_projection and projection is not None:
        loaded.used |= _storages([projection])  # taken as a transposed copy
    # The position ids are a non-persistent buffer: made here, not read from the file.
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner)
            device = next(model.parameters()).device
            module.register_buffer(attr, torch.arange(buffer.shape[-1], device=device)
                                   .expand(buffer.shape), persistent=False)
    return model


def tokenizer(folder: Path, layout: str = "clip") -> Any:
    """A CLIP tokenizer (or, for a "t5" text encoder, T5's) from a diffusers-layout folder.
    The family assets' CLIP folders hold only their settings (the pad token differs) and
    share the one vocabulary."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    if layout == "t5":
        return T5TokenizerFast.from_pretrained(folder, local_files_only=True)

    if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file():
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    overrides = {k: v for k, v in settings.items() if k.endswith("_token")}
    return CLIPTokenizer.from_pretrained(SHARED_VOCAB, local_files_only=True, **overrides)


def scheduler(sources: ConfigSources, prediction: str) -> Any:
    import diffusers

    config = json.loads((sources.folder("scheduler") / "scheduler_config.json").read_text())
    if sources.sidecar("scheduler") is None:
        config["prediction_type"] = prediction
    return getattr(diffusers, config["_class_name"]).from_config(config)
