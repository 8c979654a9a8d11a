"""Load a model (SD 1.x, SD 2.x, SDXL base; FLUX.1, also from its split sets, GGUF and
all-in-one files: sdtui.worker.flux_parts; SD 3.5, also from Stability's single files and split
sets: sdtui.worker.sd3_files; FLUX.2 Klein, also from its split sets and GGUF:
sdtui.worker.klein_files) from a diffusers folder or a single-file checkpoint, with no network:
every config and tokenizer comes from local files.

The family is detected from the key layout (sdtui.worker.families); reading the file is
sdtui.worker.checkpoint's job and building each component from the original layout is
sdtui.worker.ldm's (which also says where configs come from: a `S.config/` sidecar, a `S.yaml`,
or the family's shipped assets).

The prediction type (epsilon or v) of a single file comes from the first of: the sidecar's
scheduler config; the `.yaml` (`parameterization: "v"`); a `v_pred` marker tensor in the file;
for SD 2.x, A1111's test of the UNet itself; otherwise epsilon.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdtui.errors import BadInput
from sdtui.headers import read_once
from sdtui.modelfiles import detect_format
from sdtui.modelsets import KLEIN, ModelSet, find_set
from sdtui.worker import ldm, memory_fit
from sdtui.worker.aligned import align_weights
from sdtui.worker.checkpoint import Checkpoint, ModelInvalid
from sdtui.worker.families import (
    CFG,
    EMBEDDED,
    EPSILON,
    V_PREDICTION,
    Family,
    TextEncoder,
    detect,
    detect_folder,
    flux1,
    flux2_klein,
    folder_absent_encoders,
    folder_guidance,
    folder_inpainting,
    folder_prediction,
    is_leftover,
    sd3,
)
from sdtui.worker.families import is_inpainting as has_inpainting_unet
from sdtui.worker.families.sd1 import FAMILY as SD1
from sdtui.worker.flux_files import is_flux_layout
from sdtui.worker.sd3_files import is_sd3_layout

__all__ = ["SD1_ASSETS", "LoadedModel", "ModelInvalid", "load_model", "pick_device"]

log = logging.getLogger(__name__)

SD1_ASSETS = SD1.assets
# Marker tensors some single files carry to say how they were trained; never weights.
V_PRED_MARKER = "v_pred"
MAX_LISTED = 5


@functools.cache
def _dtype_argument() -> str:
    """diffusers 0.40 renamed from_pretrained's torch_dtype to dtype (and warns on the old)."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__) >= Version("0.40") else "torch_dtype"


@dataclass
class LoadedModel:
    pipe: Any  # the family's text-to-image diffusers pipeline
    path: str
    format: str
    device: str
    dtype: str
    load_seconds: float
    family: Family | None = None  # None only while loading, before it is detected
    inpainting: bool = False  # a 9-channel UNet: needs an init image and a mask
    prediction: str = EPSILON
    guidance: str = CFG  # CFG, EMBEDDED (FLUX.1 [dev]) or NO_GUIDANCE (FLUX.1 [schnell])
    warnings: list[str] = field(default_factory=list)
    memory: memory_fit.Plan | None = None  # where the components sit on a GPU

    @property
    def default_size(self) -> int:
        """Width and height for a request that names none: what the family was trained at."""
        return self.family.default_size(self.prediction)

    @property
    def default_steps(self) -> int:
        return self.family.steps[self.guidance]

    @property
    def denoiser(self) -> Any:
        return getattr(self.pipe, self.family.denoiser)

    def pipeline_class(self, kind: str) -> Any:
        """The family's diffusers pipeline for "text2img", "img2img" or "inpaint"."""
        import diffusers

        return getattr(diffusers, getattr(self.family.pipelines, kind))

    def info(self) -> dict[str, Any]:
        """What the `ready` event says about the model."""
        return {
            "model": self.path,
            "format": self.format,
            "family": self.family.id,
            "inpainting": self.inpainting,
            "prediction": self.prediction,
            "default_size": self.default_size,
            "size_multiple": self.family.size_multiple,
            "guidance": self.guidance,
            "default_steps": self.default_steps,
            "default_cfg": self.family.default_cfg if self.guidance == CFG else None,
            "sampling": self.family.sampler_table,
            "family_label": self.family.label,
            "device": self.device,
            "dtype": self.dtype,
            "memory": self.memory.line() if self.memory else None,
            "load_seconds": round(self.load_seconds, 3),
            "warnings": list(self.warnings),
        }


def pick_device(device: str | None = None) -> tuple[str, torch.dtype]:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, torch.float16 if device.startswith("cuda") else torch.float32


# bfloat16 compute arrived with Ampere (compute capability 8.0); Turing (a T4, 7.5) has none.
BF16_CAPABILITY = (8, 0)


def family_dtype(family: Family, device: str, capability: tuple[int, int] | None) -> torch.dtype:
    """The compute precision, decided once from the device: float32 on the CPU; for a family
    trained in bfloat16 (FLUX.1, FLUX.2 Klein), bfloat16 where the GPU computes it and float16 (with
    diffusers' activation clamping and a float32 VAE decode) where it does not; float16 for
    the Stable Diffusion families."""
    if not device.startswith("cuda"):
        return torch.float32
    if family.bf16 and capability is not None and capability >= BF16_CAPABILITY:
        return torch.bfloat16
    return torch.float16


def _capability(device: str) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if device.startswith("cuda") else None


@read_once()  # the format check, the set, the memory check and the loader share the headers
def load_model(path: str, device: str | None = None,
               dtype: torch.dtype | None = None) -> LoadedModel:
    started = time.perf_counter()
    try:
        fmt = detect_format(path)
    except BadInput as error:
        raise ModelInvalid(str(error)) from None
    device, _ = pick_device(device)
    model = LoadedModel(pipe=None, path=str(path), format=fmt, device=device, dtype="",
                        load_seconds=0.0)
    try:
        shapes = Checkpoint(Path(path), fmt).shapes if fmt == "safetensors" else {}
        model_set = find_set(path) if fmt in ("set", "safetensors", "gguf") else None
        found = _Found(Path(path), fmt, shapes, model_set)
        loader = next(row for row in LOADERS if row.takes(found))
        model.memory = _fit(found, loader, device, dtype)  # before reading weights
        loader.load(model, found, dtype)
        memory_fit.place(model.pipe, model.memory, device)
    except ModelInvalid:
        raise
    except Exception as error:  # any loader failure is a bad model to the user
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        family = model.family
        raise ModelInvalid(
            f"model {path}{f' ({family.label})' if family else ''} could not be loaded: "
            f"{type(error).__name__}: {first_line}", family=family and family.id) from error
    align_weights(model.pipe)
    model.pipe.set_progress_bar_config(disable=True)
    model.load_seconds = time.perf_counter() - started
    for warning in model.warnings:
        log.warning("%s", warning)
    return model


def _sd3_guidance(path: Path, configured: Path) -> str:
    """Large Turbo is told apart by the name given or the transformer's (it ships Large's
    configs)."""
    named = [sd3.FAMILY.guidance_of({"_name_or_path": str(name)}) for name in (path, configured)]
    return next((guidance for guidance in named if guidance != CFG), CFG)


def _fit(found: _Found, loader: _Loader, device: str,
         dtype: torch.dtype | None) -> memory_fit.Plan | None:
    """Where the model's components will sit on this GPU (None off CUDA, or for a file no header
    describes); DoesNotFit, before anything is read, when nothing fits."""
    gpu = memory_fit.device_memory(device)
    if gpu is None:
        return None
    family, guidance = loader.finds(found)
    dtype = dtype or family_dtype(family, device, _capability(device))
    request = memory_fit.Request.at_default_size(family, guidance, dtype.itemsize,
                                                 dtype == torch.float16)
    return memory_fit.check(found.path, found.fmt, request, *gpu)


def _dtype_for(model: LoadedModel, dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype or family_dtype(model.family, model.device, _capability(model.device))
    model.dtype = str(dtype).removeprefix("torch.")
    return dtype


def _load_diffusers_folder(model: LoadedModel, found: _Found, dtype: torch.dtype | None) -> None:
    path = found.path
    model.family = detect_folder(path)
    model.inpainting = folder_inpainting(path)
    model.prediction = folder_prediction(path)
    model.guidance = folder_guidance(path, model.family)
    dtype = _dtype_for(model, dtype)
    absent = folder_absent_encoders(path, model.family)
    model.warnings += [absent_encoder_note(path, model.family, spec) for spec in absent]
    model.pipe = model.pipeline_class("text2img").from_pretrained(
        path, local_files_only=True, **{_dtype_argument(): dtype}, **model.family.pipeline_options,
        **{name: None for spec in absent for name in (spec.name, spec.tokenizer)})


def absent_encoder_note(path: Path | str, family: Family, spec: TextEncoder) -> str:
    """What `ready` says, once, of a model run without an optional text encoder."""
    others = " and ".join(t.label for t in family.text_encoders if t is not spec)
    return (f"model {path} ({family.label}) has no {spec.label}: it runs on its {others} "
            f"alone, which follow the prompt less closely")


def _skipped(family: Family) -> Callable[[str], bool]:
    return lambda key: is_leftover(key) or family.unused(key) or key == V_PRED_MARKER


def _load_single_file(model: LoadedModel, found: _Found, dtype: torch.dtype | None) -> None:
    path, device = found.path, model.device
    checkpoint = Checkpoint(path, model.format)
    family = model.family = detect(path, checkpoint.shapes)
    dtype = _dtype_for(model, dtype)
    model.inpainting = has_inpainting_unet(checkpoint.shapes)
    sources = ldm.ConfigSources.beside(path, family)
    log.info("loading %s (%s) with configs from %s", path, family.label, sources)
    skip = _skipped(family)
    skipped = sum(1 for key in checkpoint.shapes if skip(key))
    try:
        state = checkpoint.read(lambda key: not skip(key), dtype, device)
    except ModelInvalid as error:
        raise ModelInvalid(f"{error} ({family.label})", family=family.id) from None
    except Exception as error:
        raise ModelInvalid(f"model file {path} ({family.label}) cannot be read (truncated or "
                           f"corrupt?): {type(error).__name__}", family=family.id) from error
    if skipped:
        log.info("skipped %d tensors inference never uses (EMA weights, DDPM buffers, ...)",
                 skipped)
    loaded = ldm.Loaded(state)
    parts: dict[str, Any] = {"unet": ldm.ldm_component("unet", loaded, sources),
                             "vae": ldm.ldm_component("vae", loaded, sources)}
    for spec in family.text_encoders:
        parts[spec.name] = ldm.text_encoder(spec, loaded, sources)
    unet = parts["unet"]
    model.prediction = _prediction(sources, checkpoint.shapes, unet, model.inpainting)
    unused = loaded.unused()
    if unused:
        listed = ", ".join(unused[:MAX_LISTED]) + (", ..." if len(unused) > MAX_LISTED else "")
        model.warnings.append(f"model file {path} ({family.label}): {len(unused)} tensors that "
                              f"no {family.label} component uses were ignored: {listed}")
    del loaded, state
    _assemble(model, parts, sources, ldm.scheduler(sources, model.prediction))


def _assemble(model: LoadedModel, parts: dict[str, Any], sources: ldm.ConfigSources,
              scheduler: Any) -> None:
    """The family's pipeline from a single file's (or a set's) components, with the tokenizers
    from the `S.config/` sidecar or the family's assets."""
    for spec in model.family.text_encoders:
        if spec.tokenizer not in parts:  # an absent optional encoder's tokenizer is None
            parts[spec.tokenizer] = ldm.tokenizer(sources.folder(spec.tokenizer), spec.layout)
    model.pipe = model.pipeline_class("text2img")(scheduler=scheduler, **parts,
                                                  **model.family.pipeline_options)


def _load_flux_files(model: LoadedModel, found: _Found, dtype: torch.dtype | None) -> None:
    """FLUX.1 from the files people have (sdtui.worker.flux_parts): a split set, its transformer
    file (.safetensors or .gguf), BFL's single file among its parts, or an all-in-one file.
    The sidecar beside the transformer file is the set's."""
    import diffusers

    from sdtui.worker.flux_parts import components_from_files, configured_file

    path = found.path
    family = model.family = flux1.FAMILY
    dtype = _dtype_for(model, dtype)
    parts = components_from_files(path, dtype)
    model.guidance = family.guidance_of(parts["transformer"].config)
    sources = ldm.ConfigSources.beside(configured_file(path), family)
    tokenizer = sources.folder("tokenizer_2")
    if not (tokenizer / "tokenizer.json").is_file():  # T5's is not shipped yet
        sidecar = sources.checkpoint.with_name(sources.checkpoint.stem + ".config")
        raise ModelInvalid(f"model {path} ({family.label}) has no T5 tokenizer: put T5 v1.1's "
                           f"tokenizer.json, tokenizer_config.json and special_tokens_map.json "
                           f"(a FLUX.1 Hub repo's tokenizer_2/) in {sidecar}/tokenizer_2/",
                           family=family.id)
    log.info("loading %s (%s) with configs from %s", path, family.label, sources)
    config = json.loads((sources.folder("scheduler") / "scheduler_config.json").read_text())
    if sources.sidecar("scheduler") is None:
        config.update(flux1.SCHEDULER_BY_GUIDANCE.get(model.guidance, {}))
    _assemble(model, parts, sources, getattr(diffusers, config["_class_name"]).from_config(config))


def _load_klein_files(model: LoadedModel, found: _Found, dtype: torch.dtype | None) -> None:
    """FLUX.2 Klein from a split set (sdtui.worker.klein_files), with the scheduler from the
    transformer's `S.config/` sidecar or FLUX.2 Klein's assets."""
    import diffusers

    from sdtui.worker import klein_files

    model_set = found.model_set
    family = model.family = flux2_klein.FAMILY
    dtype = _dtype_for(model, dtype)
    sources = ldm.ConfigSources.beside(model_set.transformer, family)
    log.info("loading %s (%s) with configs from %s", model_set.transformer, family.label, sources)
    model.guidance = klein_files.guidance(model_set)
    parts = klein_files.components(model_set, dtype)
    config = json.loads((sources.folder("scheduler") / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    _assemble(model, {**parts, "is_distilled": model.guidance != CFG}, sources, scheduler)


def _load_sd3_files(model: LoadedModel, found: _Found, dtype: torch.dtype | None) -> None:
    """SD 3.5 from Stability's single file or a split set (sdtui.worker.sd3_files), with the
    tokenizers and scheduler from the `S.config/` sidecar beside the file (a set's: beside its
    transformer) or SD 3.5's assets. T5 is optional; its tokenizer, not shipped, must then be in
    the sidecar. Large Turbo is told apart by the name given or the transformer's."""
    import diffusers

    from sdtui.worker.sd3_files import components, set_components

    path, model_set, configured = found.path, found.model_set, found.configured
    family = model.family = sd3.FAMILY
    dtype = _dtype_for(model, dtype)
    sources = ldm.ConfigSources.beside(configured, family)
    log.info("loading %s (%s) with configs from %s", path, family.label, sources)
    parts = set_components(model_set, dtype) if model_set else components(path, dtype)
    model.guidance = _sd3_guidance(path, configured)
    t5 = family.text_encoders[-1]
    if parts[t5.name] is None:
        model.warnings.append(absent_encoder_note(path, family, t5))
        parts[t5.tokenizer] = None
    elif not (sources.folder(t5.tokenizer) / "tokenizer.json").is_file():
        raise ModelInvalid(f"model {path} ({family.label}) has no T5 tokenizer: put T5 v1.1's "
                           f"tokenizer.json, tokenizer_config.json and special_tokens_map.json "
                           f"(an SD 3.5 Hub repo's tokenizer_3/) in "
                           f"{configured.with_name(configured.stem + ldm.CONFIG_DIR_SUFFIX)}"
                           f"/tokenizer_3/",
                           family=family.id)
    config = json.loads((sources.folder("scheduler") / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    _assemble(model, parts, sources, scheduler)


@dataclass(frozen=True)
class _Found:
    """What is known of a model before a loader is chosen: its path and format, a .safetensors
    file's tensor shapes, and the split set it names."""

    path: Path
    fmt: str
    shapes: dict[str, Any]
    model_set: ModelSet | None

    @property
    def configured(self) -> Path:
        """The file whose `S.config/` sidecar configures the model: a set's transformer."""
        return self.model_set.transformer if self.model_set else self.path

    def set_of(self, family: str) -> bool:
        return self.model_set is not None and self.model_set.family == family


@dataclass(frozen=True)
class _Loader:
    """One way models are loaded: which it takes, the family and guidance kind it will find
    (from configs and headers alone: the memory check's, before any weight is read), and the
    loading itself."""

    takes: Callable[[_Found], bool]
    finds: Callable[[_Found], tuple[Family, str]]
    load: Callable[[LoadedModel, _Found, torch.dtype | None], None]


def _folder_family(found: _Found) -> tuple[Family, str]:
    family = detect_folder(found.path)
    return family, folder_guidance(found.path, family)


def _sd3_family(found: _Found) -> tuple[Family, str]:
    return sd3.FAMILY, _sd3_guidance(found.path, found.configured)


def _klein_family(found: _Found) -> tuple[Family, str]:
    from sdtui.worker import klein_files

    return flux2_klein.FAMILY, klein_files.guidance(found.model_set)


# The first loader that takes a model loads it; a new family is one row.
LOADERS = (
    _Loader(lambda f: f.fmt == "diffusers", _folder_family, _load_diffusers_folder),
    _Loader(lambda f: f.set_of(sd3.FAMILY.id), _sd3_family, _load_sd3_files),
    _Loader(lambda f: f.set_of(KLEIN.family), _klein_family, _load_klein_files),
    _Loader(lambda f: f.fmt in ("set", "gguf") or is_flux_layout(f.shapes),
            lambda f: (flux1.FAMILY, EMBEDDED), _load_flux_files),
    _Loader(lambda f: is_sd3_layout(f.shapes), _sd3_family, _load_sd3_files),
    _Loader(lambda f: True, lambda f: (detect(f.path, f.shapes), CFG), _load_single_file),
)


def _prediction(sources: ldm.ConfigSources, shapes: dict[str, Any], unet: Any,
                inpainting: bool) -> str:
    if sources.sidecar("scheduler") is not None:
        config = json.loads((sources.folder("scheduler") / "scheduler_config.json").read_text())
        return config.get("prediction_type", EPSILON)
    if sources.original_yaml is not None:
        return ldm.yaml_prediction(sources.yaml())
    if V_PRED_MARKER in shapes:
        return V_PREDICTION
    guess = sources.family.guess_v_prediction
    if guess is not None and not inpainting:
        found = V_PREDICTION if guess(unet) else EPSILON
        log.info("%s: no sidecar says; the UNet looks like a %s model", sources.checkpoint,
                 found)
        return found
    return EPSILON
