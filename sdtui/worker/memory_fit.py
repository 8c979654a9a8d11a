"""Does a model fit the GPU, and what must sit on the CPU for it to fit: decided before any
weight is read, from the files' headers alone (a safetensors tensor table, a GGUF's tensor
infos), the size a request asks for, and the device's total memory. One decision for every
family.

What each component occupies on the device is what the loader keeps: safetensors weights at the
compute dtype (fp8-stored ones are upcast as they are read, but a T5 encoder's fp8 matrices stay
fp8 and are upcast a block at a time while it computes), a GGUF transformer's quantized
blocks as stored (its F32/F16 tensors at the compute dtype), a T5 GGUF dequantized whole.

Denoising's activations follow ComfyUI's estimate
(Comfy-Org/ComfyUI@01f03bbdc7df9462d3fc4c0918f80049333450f3, GPL-3.0; numbers only):
batch × latent area (1/8 of the image) × dtype size × 0.01 × memory_usage_factor MiB
(comfy/model_base.py memory_required; the factor per family in comfy/supported_models.py).
The VAE decode's are measured: diffusers' AutoencoderKL at FLUX.1's and SD 3.5's full size,
decoding 1024² in float32 on the CPU, peaks 966 bytes above its weights per pixel and dtype
byte (linear from 256² to 1024²); sdtui counts 1208 (+25% for the CUDA caching allocator).
ComfyUI counts 2178 (comfy/sd.py memory_used_decode) because it falls back to a tiled decode;
diffusers' pipelines do not, and 2178 would refuse FLUX.1 at 1536² on a T4.

Two placements, the first that fits: everything on the GPU; or diffusers' model CPU offload
(each component moves to the GPU for its own forward and back: the text encoders are on the CPU
while the transformer denoises). A transformer that does not fit with its activations is
refused rather than streamed layer by layer (sequential offload would carry the whole
transformer over PCIe at every step, and the instance's host RAM must hold it anyway): the
refusal names the GGUF quantizations and the instance type it would fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdtui.errors import BadInput
from sdtui.headers import safetensors_header
from sdtui.modelsets import find_set
from sdtui.worker.checkpoint import ModelInvalid
from sdtui.worker.families.base import CFG, EPSILON, Family

GiB = 1024**3
MiB = 1024**2
# What the device's total memory holds besides tensors: the CUDA context, cuBLAS/cuDNN
# workspaces, the caching allocator's fragmentation.
RESERVE = GiB
DENOISER, TEXT_ENCODER, VAE = "denoiser", "text encoder", "VAE"
NONE, MODEL = "none", "model"
# The VAE decode's activations per image pixel and dtype byte (see above).
DECODE_PER_PIXEL = 1208
LATENT_SCALE = 8

# GGUF quantizations users download, best first, with (block size, bytes per block) from
# ggml's tables (gguf.constants.GGML_QUANT_SIZES); "_S" files are mostly their K type.
QUANTIZATIONS = (("Q8_0", 32, 34), ("Q6_K", 256, 210), ("Q5_K_S", 256, 176),
                 ("Q4_K_S", 256, 144))
# torch's total_memory of each instance type's GPU (AWS's one-GPU xlarge types).
INSTANCES = (("g4dn.xlarge", "16 GB T4", 15_828_320_256),
             ("g6.xlarge", "24 GB L4", 23_580_639_232),
             ("g5.xlarge", "24 GB A10G", 23_836_098_560),
             ("g6e.xlarge", "48 GB L40S", 47_697_362_944))
_FLOAT_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_STORED_SIZES = {**_FLOAT_SIZES, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FP8 = ("F8_E4M3", "F8_E5M2")


def _keeps_fp8(name: str, key: str) -> bool:
    """A T5 encoder keeps its fp8 matrices as stored, each block upcast while it computes
    (sdtui.worker.flux_parts.t5_encoder; its embedding is read whole); other fp8 weights are
    upcast at load."""
    return "t5" in name.lower() and not key.endswith("shared.weight")


class DoesNotFit(ModelInvalid):
    """The model set cannot run on this GPU in any placement sdtui makes."""


@dataclass(frozen=True)
class Part:
    role: str  # DENOISER, TEXT_ENCODER or VAE
    name: str  # the file, or the component's folder
    bytes: int  # on the device, at the compute dtype
    elements: int  # weights, for what a quantized copy would take
    quantizable: int = 0  # elements in 2-D weights (what a GGUF quantizes)


@dataclass(frozen=True)
class Request:
    """What the estimate depends on beyond the files."""

    family: Family
    guidance: str
    width: int
    height: int
    dtype_size: int  # the compute dtype's bytes
    vae_upcast: bool  # the VAE decodes in float32 (float16 compute of an upcast family)

    @classmethod
    def at_default_size(cls, family: Family, guidance: str, dtype_size: int,
                        float16: bool) -> Request:
        """What loading is checked for: the family's own size (the size a request naming none
        gets), at the compute dtype the device decided."""
        size = family.default_size(EPSILON)
        return cls(family, guidance, size, size, dtype_size, family.upcast_vae and float16)


@dataclass(frozen=True)
class Plan:
    offload: str  # NONE or MODEL
    peak: int  # bytes, the largest phase
    budget: int  # bytes torch can hand out
    parts: tuple[Part, ...]
    request: Request  # what it was planned for

    def size_refusal(self, width: int, height: int) -> str | None:
        """Why a request of this size would not fit the placement made at load, in one line."""
        bigger = replace(self.request, width=width, height=height)
        peak = _peaks(list(self.parts), bigger)[self.offload]
        if peak <= self.budget:
            return None
        default = self.request.width
        return (f"{width}×{height} needs an estimated {gib(peak)} on this GPU and "
                f"{gib(self.budget)} is free; ask for a smaller size ({default}×{default} "
                f"fits)")

    @property
    def offloaded(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.role == TEXT_ENCODER) if self.offload == MODEL \
            else ()

    def line(self) -> str:
        """What `ready` says of the placement, in one line."""
        where = (f"text encoders on the CPU while the transformer denoises (model CPU offload: "
                 f"{', '.join(f'{p.name} {gib(p.bytes)}' for p in self.offloaded)})"
                 if self.offload == MODEL else "everything on the GPU")
        return f"{where}; estimated peak {gib(self.peak)} of {gib(self.budget)}"


def gib(count: float) -> str:
    return f"{count / GiB:.1f} GiB"


# --- what each file puts on the device ---------------------------------------------------------

def _safetensors_parts(path: Path, size: int,
                       role_of: Callable[[str], tuple[str, str] | None]) -> list[Part]:
    """Parts of a .safetensors file by tensor name (role_of: (role, name) or None to skip)."""
    with open(path, "rb") as stream:
        header = safetensors_header(stream)
    if header is None:
        raise ModelInvalid(f"model file {path} is not a safetensors file (truncated or corrupt?)")
    sums: dict[tuple[str, str], list[int]] = {}
    for key, info in header.items():
        if key == "__metadata__" or not isinstance(info, dict):
            continue
        where = role_of(key)
        if where is None:
            continue
        shape = [int(n) for n in info.get("shape", ())]
        count = _product(shape)
        dtype = str(info.get("dtype", "F32"))
        each = size if dtype in _FLOAT_SIZES else _STORED_SIZES.get(dtype, 4)
        if dtype in _FP8 and _keeps_fp8(where[1], key):
            each = 1
        total = sums.setdefault(where, [0, 0, 0])
        total[0] += count * each
        total[1] += count
        total[2] += count if len(shape) == 2 else 0
    return [Part(role, name, *totals) for (role, name), totals in sums.items()]


def _product(shape: Iterable[int]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def _gguf_part(path: Path, role: str, size: int, dequantized: bool) -> Part:
    """A GGUF's footprint: quantized blocks as stored unless the loader dequantizes it whole."""
    from gguf import GGMLQuantizationType

    from sdtui.worker.gguf_files import reader

    plain = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
    total = elements = quantizable = 0
    for tensor in reader(path).tensors:
        count = int(tensor.n_elements)
        elements += count
        quantizable += count if len(tensor.shape) == 2 else 0
        total += count * size if dequantized or tensor.tensor_type in plain \
            else int(tensor.n_bytes)
    return Part(role, path.name, total, elements, quantizable)


def file_part(path: Path, role: str, size: int) -> Part:
    """One component's file: a .gguf (a transformer's stays quantized, a text encoder's is
    dequantized whole) or a .safetensors."""
    if path.suffix.lower() == ".gguf":
        return _gguf_part(path, role, size, dequantized=role != DENOISER)
    return _safetensors_parts(path, size, lambda key: (role, path.name))[0]


def _role_of_component(component: str) -> str | None:
    if component in ("transformer", "unet"):
        return DENOISER
    if component.startswith("text_encoder"):
        return TEXT_ENCODER
    return VAE if component == "vae" else None


def _folder_parts(folder: Path, size: int) -> list[Part]:
    """A diffusers folder: each component's weights as from_pretrained picks them (the files
    without a variant infix)."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    parts = []
    for component, value in index.items():
        role = _role_of_component(component)
        if role is None or not isinstance(value, list) or None in value:
            continue
        files = [f for f in sorted((folder / component).glob("*.safetensors"))
                 if "." not in f.stem]
        found = [p for f in files
                 for p in _safetensors_parts(f, size, lambda key, role=role: (role, ""))]
        if found:
            parts.append(Part(role, component, sum(p.bytes for p in found),
                              sum(p.elements for p in found), sum(p.quantizable for p in found)))
    return parts


# A single file's components by key prefix (Stability's, BFL's all-in-one and the LDM layouts).
_PREFIXES = (("model.diffusion_model.", DENOISER, "transformer"),
             ("first_stage_model.", VAE, "VAE"), ("vae.", VAE, "VAE"),
             ("text_encoders.clip_l.", TEXT_ENCODER, "CLIP-L"),
             ("text_encoders.clip_g.", TEXT_ENCODER, "CLIP-G"),
             ("text_encoders.t5xxl.", TEXT_ENCODER, "T5-XXL"),
             ("cond_stage_model.", TEXT_ENCODER, "text encoder"),
             ("conditioner.embedders.0.", TEXT_ENCODER, "text encoder"),
             ("conditioner.embedders.1.", TEXT_ENCODER, "text encoder 2"))


def _by_prefix(key: str) -> tuple[str, str] | None:
    for prefix, role, name in _PREFIXES:
        if key.startswith(prefix):
            return role, name
    return None


def model_parts(path: str | Path, fmt: str, size: int) -> list[Part]:
    """What the model at `path` puts on the device at `size` bytes per (float) element; [] for
    what no header describes (a .ckpt)."""
    path = Path(path)
    if fmt == "diffusers":
        return _folder_parts(path, size)
    if fmt == "ckpt":
        return []
    try:
        model_set = find_set(path)
    except BadInput:
        model_set = None  # the loader says what is wrong with it
    if model_set is not None:
        parts = [file_part(model_set.transformer, DENOISER, size)]
        for component, file in model_set.parts.items():
            role = _role_of_component(component)
            if role is not None:
                parts.append(file_part(file, role, size))
        return parts
    if fmt == "gguf":
        return [_gguf_part(path, DENOISER, size, dequantized=False)]
    return _safetensors_parts(path, size, _by_prefix)


# --- the decision -------------------------------------------------------------------------------

def activations(family: Family, width: int, height: int, dtype_size: int, guidance: str) -> int:
    """ComfyUI's estimate of what denoising one image needs beyond the weights."""
    batch = 2 if guidance == CFG else 1  # the negative prompt's pass runs in the same batch
    area = batch * (width // LATENT_SCALE) * (height // LATENT_SCALE)
    return int(area * dtype_size * 0.01 * family.memory_factor * MiB)


def decode_activations(width: int, height: int, dtype_size: int) -> int:
    return DECODE_PER_PIXEL * width * height * dtype_size


def _peaks(parts: list[Part], r: Request) -> dict[str, int]:
    """The peak of each placement: everything on the GPU, or one component at a time."""
    def total(role: str) -> int:
        return sum(p.bytes for p in parts if p.role == role)

    denoise = activations(r.family, r.width, r.height, r.dtype_size, r.guidance)
    vae_size = 4 if r.vae_upcast else r.dtype_size
    decode = decode_activations(r.width, r.height, vae_size)
    vae = total(VAE) * vae_size // r.dtype_size
    encoders = [p.bytes for p in parts if p.role == TEXT_ENCODER]
    return {
        NONE: sum(p.bytes for p in parts) - total(VAE) + vae + max(denoise, decode),
        # Offloaded, one component computes at a time; the small VAE may stay beside the next
        # prompt's text encoder until the pipeline frees its hooks.
        MODEL: max(max(encoders, default=0) + vae, total(DENOISER) + denoise, vae + decode),
    }


def plan(parts: list[Part], request: Request, total_memory: int) -> Plan | None:
    """The first placement that fits `total_memory`, or None."""
    budget = total_memory - RESERVE
    peaks = _peaks(parts, request)
    for offload in (NONE, MODEL):
        if peaks[offload] <= budget:
            return Plan(offload, peaks[offload], budget, tuple(parts), request)
    return None


def _quantized(part: Part, block: int, block_bytes: int, size: int) -> Part:
    rest = part.elements - part.quantizable
    return Part(part.role, part.name, part.quantizable * block_bytes // block + rest * size,
                part.elements, part.quantizable)


def way_out(parts: list[Part], request: Request, total_memory: int) -> str:
    """The GGUF quantizations of the transformer that would fit this GPU, and the smallest
    instance type the set as it is would fit."""
    denoiser = next(p for p in parts if p.role == DENOISER)
    fitting = []
    for name, block, block_bytes in QUANTIZATIONS:
        smaller = _quantized(denoiser, block, block_bytes, request.dtype_size)
        if smaller.bytes < denoiser.bytes and plan(
                [smaller if p is denoiser else p for p in parts], request, total_memory):
            fitting.append(name)
    ways = []
    if fitting:
        names = fitting[0] if len(fitting) == 1 else f"{fitting[0]} or {fitting[-1]}"
        ways.append(f"use a {names} GGUF transformer")
    instance = next(((kind, gpu) for kind, gpu, memory in INSTANCES
                     if memory > total_memory and plan(parts, request, memory)), None)
    if instance:
        ways.append(f"an instance with a {instance[1]} ({instance[0]})")
    return ", or ".join(ways) or "use a smaller size or a smaller model"


def check(path: str | Path, fmt: str, request: Request, gpu: str,
          total_memory: int) -> Plan | None:
    """The placement for the model at `path` on this GPU; DoesNotFit, in one line with the
    numbers and the way out, when none fits. None when no header describes the model."""
    parts = model_parts(path, fmt, request.dtype_size)
    if not any(p.role == DENOISER for p in parts):
        return None
    found = plan(parts, request, total_memory)
    if found is not None:
        return found
    r = request
    denoiser = sum(p.bytes for p in parts if p.role == DENOISER)
    need = denoiser + activations(r.family, r.width, r.height, r.dtype_size, r.guidance)
    free = total_memory - RESERVE
    encoder = max((p for p in parts if p.role == TEXT_ENCODER), key=lambda p: p.bytes,
                  default=None)
    if need > free:
        why = (f"its {r.family.denoiser} needs {gib(need)} to denoise {r.width}×{r.height} "
               f"({gib(denoiser)} of weights) with the text encoders offloaded")
    elif encoder is not None and encoder.bytes > free:
        why = f"its text encoder {encoder.name} alone needs {gib(encoder.bytes)}"
    else:
        why = (f"decoding {r.width}×{r.height} needs "
               f"{gib(_peaks(parts, request)[MODEL])}")
    raise DoesNotFit(
        f"model {path} ({r.family.label}) does not fit this GPU ({gpu}, "
        f"{gib(total_memory)}): {why}, and {gib(free)} is free for it — "
        f"{way_out(parts, request, total_memory)}", family=r.family.id)


def device_memory(device: str) -> tuple[str, int] | None:
    """The GPU's name and total memory as torch reports them; None off CUDA."""
    if not device.startswith("cuda"):
        return None
    import torch

    properties = torch.cuda.get_device_properties(device)
    return properties.name, int(properties.total_memory)


def place(pipe: Any, found: Plan | None, device: str) -> None:
    """Put the pipeline where the plan says: on the device, or under model CPU offload."""
    if found is not None and found.offload == MODEL:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


__all__ = ["DoesNotFit", "Part", "Plan", "Request", "check", "device_memory", "file_part",
           "model_parts", "place", "plan", "way_out"]
