"""Load a Stable Diffusion 1.x pipeline from a diffusers folder or a single-file checkpoint,
with no network: every config and the tokenizer come from local files.

Single-file checkpoints (.ckpt, .safetensors) hold weights only. For each pipeline component
C (unet, vae, text_encoder, tokenizer, scheduler) of a checkpoint FILE with stem S the config
comes from the first of:
  1. `S.config/C/` beside the file (a diffusers-layout folder: configs and tokenizer only);
  2. for unet and vae: `S.yaml` beside the file (the original LDM config, as other SD tools
     read it);
  3. `sdtui/assets/sd1/C/`, shipped in the package: the SD 1.x configs and CLIP ViT-L/14
     tokenizer, which is all the guide's sd-v1-4.ckpt needs.

A .safetensors file is read with one sequential read (it may sit on s3fs, where an mmap is
slow); a .ckpt goes through torch.load(weights_only=True), so loading it runs no pickled code.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from sdtui.errors import BadInput
from sdtui.modelfiles import CONFIG_DIR_SUFFIX, YAML_SUFFIX, detect_format

log = logging.getLogger(__name__)

SD1_ASSETS = Path(str(files("sdtui") / "assets" / "sd1"))
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x


class ModelInvalid(Exception):
    """A model that is missing, corrupt or not SD 1.x. The message names the file."""


@dataclass
class LoadedModel:
    pipe: Any  # diffusers.StableDiffusionPipeline
    path: str
    format: str
    device: str
    dtype: str
    load_seconds: float


def pick_device(device: str | None = None) -> tuple[str, torch.dtype]:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, torch.float16 if device.startswith("cuda") else torch.float32


def load_model(path: str, device: str | None = None) -> LoadedModel:
    started = time.perf_counter()
    try:
        fmt = detect_format(path)
    except BadInput as error:
        raise ModelInvalid(str(error)) from None
    device, dtype = pick_device(device)
    try:
        if fmt == "diffusers":
            pipe = _load_diffusers_folder(Path(path), dtype)
        else:
            pipe = _load_single_file(Path(path), fmt, dtype)
        pipe.to(device)
    except ModelInvalid:
        raise
    except Exception as error:  # any loader failure is a bad model to the user
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelInvalid(
            f"model {path} could not be loaded: {type(error).__name__}: {first_line}"
        ) from error
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(
        pipe=pipe,
        path=str(path),
        format=fmt,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        load_seconds=time.perf_counter() - started,
    )


def _load_diffusers_folder(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        path,
        local_files_only=True,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # Casting to float32 (what it already holds) only makes diffusers log noise.
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


# --- reading checkpoints


class _Inert:
    """Stands in for a non-tensor object pickled into a training checkpoint (a Lightning
    callback, a numpy scalar): it accepts any arguments and does nothing."""

    def __new__(cls, *args: object, **kwargs: object) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError:
        # Old training checkpoints pickle extra objects beside the weights. Let them through
        # as inert placeholders instead of unpickling them for real (which could run code).
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        log.warning("%s holds non-tensor objects %s; reading them as placeholders", path, unsafe)
        stubs = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in unsafe]
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)


def read_state_dict(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint, keys as stored (LDM layout for SD 1.x)."""
    if fmt == "safetensors":
        from safetensors.torch import load

        checkpoint: Any = load(path.read_bytes())  # one sequential read, no mmap
    else:
        checkpoint = _torch_load(path)
    while isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ModelInvalid(f"model file {path} holds no state dict of tensors")
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def check_sd1_keys(path: Path, state: dict[str, torch.Tensor]) -> None:
    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in state)

    if has(OPEN_CLIP_PREFIX):
        raise ModelInvalid(
            f"model file {path} is a Stable Diffusion 2.x checkpoint; sdtui reads SD 1.x "
            "checkpoints (such as sd-v1-4.ckpt) and diffusers folders"
        )
    missing = [
        what
        for what, prefix in (("UNet", UNET_PREFIX), ("VAE", VAE_PREFIX), ("CLIP", CLIP_PREFIX))
        if not has(prefix)
    ]
    if missing:
        raise ModelInvalid(
            f"model file {path} is not an SD 1.x checkpoint: it has no {', '.join(missing)} "
            f"weights ({len(state)} tensors, none under the expected key prefixes)"
        )


# --- building the pipeline from a state dict


@dataclass
class ConfigSources:
    """Where each component's config comes from; see the module docstring for the rule."""

    checkpoint: Path
    config_dir: Path | None
    original_yaml: Path | None

    @classmethod
    def beside(cls, checkpoint: Path) -> ConfigSources:
        config_dir = checkpoint.with_name(checkpoint.stem + CONFIG_DIR_SUFFIX)
        original_yaml = checkpoint.with_name(checkpoint.stem + YAML_SUFFIX)
        return cls(
            checkpoint=checkpoint,
            config_dir=config_dir if config_dir.is_dir() else None,
            original_yaml=original_yaml if original_yaml.is_file() else None,
        )

    def folder(self, component: str) -> Path:
        if self.config_dir is not None and (self.config_dir / component).is_dir():
            return self.config_dir / component
        return SD1_ASSETS / component

    def uses_yaml(self, component: str) -> bool:
        return self.original_yaml is not None and self.folder(component).parent == SD1_ASSETS


def _load_strict(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str, sources: ConfigSources
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshapen = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or misshapen:
        example = (missing or unexpected or misshapen)[0]
        if sources.uses_yaml(what):
            origin, hint = sources.original_yaml, "the checkpoint is incomplete or not for it"
        elif sources.folder(what).parent == SD1_ASSETS:
            origin = "the shipped SD 1.x configs"
            sidecar = sources.checkpoint.stem + CONFIG_DIR_SUFFIX
            hint = f"a checkpoint with other dims needs {sidecar}/ beside it"
        else:
            origin, hint = sources.folder(what), "the checkpoint is incomplete or not for it"
        raise ModelInvalid(
            f"model file {sources.checkpoint}: its {what} weights do not fit the {what} config "
            f"from {origin} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} of another shape, e.g. {example}); {hint}"
        )
    model.load_state_dict(weights, strict=True, assign=True)


def _build_from_meta(cls: Any, config: dict[str, Any]) -> Any:
    # Skip random init: every parameter is replaced by the checkpoint's (load_state_dict assign).
    with torch.device("meta"):
        return cls.from_config(config)


def _ldm_component(kind: str, state: dict[str, torch.Tensor], sources: ConfigSources) -> Any:
    """The UNet or the VAE: its config from the sidecar folder, the .yaml or the shipped
    assets, then the checkpoint's weights converted from the LDM layout and loaded strictly."""
    import diffusers
    from diffusers.loaders import single_file_utils as sfu

    cls, config_from_ldm, convert = {
        "unet": (diffusers.UNet2DConditionModel, sfu.create_unet_diffusers_config_from_ldm,
                 sfu.convert_ldm_unet_checkpoint),
        "vae": (diffusers.AutoencoderKL, sfu.create_vae_diffusers_config_from_ldm,
                sfu.convert_ldm_vae_checkpoint),
    }[kind]
    if sources.uses_yaml(kind):
        original = sfu.fetch_original_config(str(sources.original_yaml), local_files_only=True)
        config = config_from_ldm(original, state)
    else:
        config = cls.load_config(sources.folder(kind), local_files_only=True)
    model = _build_from_meta(cls, config)
    _load_strict(model, convert(state, model.config), kind, sources)
    return model


def _text_encoder(state: dict[str, torch.Tensor], sources: ConfigSources) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig.from_pretrained(sources.folder("text_encoder"), local_files_only=True)
    # Built for real, not on meta: it has a non-persistent position_ids buffer.
    model = CLIPTextModel(config).eval()
    flattened = not hasattr(model, "text_model")  # transformers >= 5.6 dropped the wrapper
    weights = {}
    for key, tensor in state.items():
        if not key.startswith(CLIP_PREFIX) or key.endswith("position_ids"):
            continue
        name = key[len(CLIP_PREFIX) :]
        weights[name.removeprefix("text_model.") if flattened else name] = tensor
    _load_strict(model, weights, "text_encoder", sources)
    return model


def _scheduler(sources: ConfigSources) -> Any:
    import diffusers

    config = json.loads((sources.folder("scheduler") / "scheduler_config.json").read_text())
    return getattr(diffusers, config["_class_name"]).from_config(config)


def _load_single_file(path: Path, fmt: str, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    try:
        state = read_state_dict(path, fmt)
    except ModelInvalid:
        raise
    except Exception as error:
        raise ModelInvalid(
            f"model file {path} cannot be read (truncated or corrupt?): {type(error).__name__}"
        ) from error
    check_sd1_keys(path, state)
    sources = ConfigSources.beside(path)
    log.info("loading %s with configs from %s", path, sources)
    # Cast once here: fp16 checkpoints run in float32 on a CPU, fp32 ones in float16 on a GPU.
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    text_encoder = _text_encoder(state, sources).to(dtype)
    return StableDiffusionPipeline(
        unet=_ldm_component("unet", state, sources),
        vae=_ldm_component("vae", state, sources),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(sources.folder("tokenizer"), local_files_only=True),
        scheduler=_scheduler(sources),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
