"""LoRA files named in a prompt (`<lora:NAME:W>`), applied for one request and removed after it.

NAME.safetensors comes from the `loras/` folder beside the model. Files in the kohya/A1111 key
layout (what people download; sd-scripts' for FLUX.1) and in diffusers' own layout (ai-toolkit's
FLUX.1 files) are accepted; the family's own diffusers LoRA loader converts them (FLUX.1's
converts xlabs' and ComfyUI's layouts too; SD 3.5's reads diffusers' layout only) and peft
wraps the layers. Before anything is applied, a file whose metadata or key layout says it was
made for another family is refused naming that family, and every layer the file names must
exist in this model with the same shape: a LoRA for another family is never half-applied.
After the request every adapter is unloaded, so no request's LoRA reaches the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdtui.errors import BadInput
from sdtui.loras import LORA_DIR, LORA_SUFFIX, LoraRef

if TYPE_CHECKING:  # families reads LoRA keys with this module's helpers
    from sdtui.worker.families.base import Family

log = logging.getLogger(__name__)

UNET = "unet"  # a LoRA for one of SD's UNets, its family unsaid

MAX_LORA_BYTES = 2 * 1024**3
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.")
# kohya's metadata names the family it trained on (A1111 reads the same fields).
_FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux1": "FLUX.1",
                 "sd3": "SD 3.5", UNET: "a Stable Diffusion UNet (SD 1.x, SD 2.x or SDXL)"}
UNET_FAMILIES = frozenset({"sd1", "sd2", "sdxl"})
# The families a prompt's LoRAs apply to (FLUX.2 [klein]'s are refused).
LORA_FAMILIES = UNET_FAMILIES | {"flux1", "sd3"}
# The key layouts only one kind of model has, for a file whose metadata is silent: kohya's
# names are the original models' module paths (BFL's FLUX.1 blocks, SD3's joint blocks, SD's
# UNet), ComfyUI's keep them dotted; diffusers' name its own modules (FLUX.1's single-stream
# blocks, SD 3.5 Medium's second attention).
_LAYOUT_FAMILIES = (
    (re.compile(r"^(lora_unet_(double|single)_blocks_|lora_transformer_single_transformer_"
                r"blocks_|diffusion_model\.(double|single)_blocks\.|transformer\.single_"
                r"transformer_blocks\.)"), "flux1"),
    (re.compile(r"^(lora_unet_joint_blocks_|diffusion_model\.joint_blocks\.|transformer\."
                r"transformer_blocks\.\d+\.attn2\.)"), "sd3"),
    (re.compile(r"^(lora_unet_(down|up|input|output)_blocks_|lora_unet_mid(dle)?_block_|"
                r"unet\.)"), UNET),
)
# What each transformer family's diffusers loader (0.42.1) reads.
_LAYOUTS = {"flux1": "kohya's, ai-toolkit's, xlabs' or diffusers' layout",
            "sd3": "diffusers' layout (transformer.…, text_encoder.…) only"}
_CACHED_FILES = 4
# What `ready` lists (the API's /sdapi/v1/loras): a bounded event whatever the folder holds.
MAX_LISTED = 256
MAX_LISTED_HEADER = 1024**2


class LoraInvalid(BadInput):
    pass


@dataclass
class LoraFile:
    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    sha256: str  # of the whole file
    a1111_hash: str  # A1111's "Lora hashes": sha256 of the tensor data after the header

    def copy(self) -> dict[str, torch.Tensor]:
        """The tensors for diffusers' converters, which may scale them in place (FLUX.1's
        kohya converter multiplies text-encoder weights by alpha/rank with `*=`): a cached
        file must not take that again on every read."""
        return {key: tensor.clone() for key, tensor in self.tensors.items()}

    def trained_family(self) -> str | None:
        return metadata_family(self.metadata)

    def made_for(self) -> str | None:
        """The family the file was made for: its metadata's, else its key layout's (UNET
        for an SD UNet's keys, whose family the UNet's own shapes tell)."""
        return self.trained_family() or layout_family(self.tensors)


def metadata_family(metadata: dict[str, str]) -> str | None:
    """The family kohya's `ss_base_model_version` or the model spec's architecture names
    (kohya-ss/sd-scripts library/sai_model_spec.py: flux-1-dev, stable-diffusion-3...)."""
    base = str(metadata.get("ss_base_model_version", "")).lower()
    arch = str(metadata.get("modelspec.architecture", "")).lower()
    if base.startswith("sdxl"):
        return "sdxl"
    if metadata.get("ss_v2") == "True" or base.startswith("sd_v2"):
        return "sd2"
    if base.startswith("sd_v1"):
        return "sd1"
    if base.startswith(("flux1", "flux_1", "flux.1")) or arch.startswith("flux-1"):
        return "flux1"
    if base.startswith("sd3") or arch.startswith("stable-diffusion-3"):
        return "sd3"
    return None


def layout_family(keys: Any) -> str | None:
    for pattern, family in _LAYOUT_FAMILIES:
        if any(pattern.match(key) for key in keys):
            return family
    return None


def read_lora(path: Path, shown: str) -> LoraFile:
    """One sequential read (it may sit on s3fs); the header is checked before the tensors."""
    from safetensors.torch import load

    size = path.stat().st_size
    if size > MAX_LORA_BYTES:
        raise LoraInvalid(f"LoRA file {shown} is {size / 2**30:.1f} GiB; a LoRA is at most "
                          f"{MAX_LORA_BYTES // 2**30} GiB")
    data = path.read_bytes()
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        if not 2 <= header_len <= len(data) - 8:
            raise ValueError("header length out of range")
        header = json.loads(data[8 : 8 + header_len])
        tensors = load(data)
    except Exception as exc:
        raise LoraInvalid(f"LoRA file {shown} is not a valid .safetensors file "
                          f"(truncated or corrupt?): {type(exc).__name__}") from None
    return LoraFile(
        path=path,
        tensors=tensors,
        metadata=_metadata(header),
        sha256=hashlib.sha256(data).hexdigest(),
        a1111_hash=hashlib.sha256(data[8 + header_len :]).hexdigest(),
    )


def _metadata(header: Any) -> dict[str, str]:
    """A safetensors header's `__metadata__` (kohya's training notes), as strings."""
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def _listed_metadata(path: Path) -> dict[str, str]:
    """The metadata of a LoRA file's header alone; empty for a header that is unreadable or
    over MAX_LISTED_HEADER (the listing never reads the tensors)."""
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if not 2 <= header_len <= MAX_LISTED_HEADER:
                return {}
            return _metadata(json.loads(f.read(header_len)))
    except (OSError, ValueError, struct.error):
        return {}


def listed(model_path: str) -> list[dict[str, Any]]:
    """The LoRA files a prompt can name, for `ready`: `name` (the NAME of `<lora:NAME>`),
    `path` and the file's metadata, at most MAX_LISTED of them."""
    folder = Path(model_path).parent / LORA_DIR
    if not folder.is_dir():
        return []
    found = sorted(folder.rglob("*" + LORA_SUFFIX))[:MAX_LISTED]
    entries = []
    for path in found:
        if path.is_file():
            metadata = _listed_metadata(path)
            family = metadata_family(metadata)
            entries.append({"name": path.stem, "path": str(path), "metadata": metadata,
                            **({"family": family} if family else {})})
    return entries


# The layouts diffusers' LoRA conversion leaves keys in: `<layer>.lora.down.weight`,
# `<layer>.lora_linear_layer.up.weight`, peft's `<layer>.lora_A.weight`, and the old
# attention-processor names `<attn>.processor.to_q_lora.down.weight`.
_PROCESSOR_KEY = re.compile(
    r"^(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_LAYER_KEY = re.compile(r"^(.*)\.(?:lora(?:_linear_layer)?\.(down|up)|lora_([AB]))\.weight$")
_PROCESSOR_LAYERS = {
    "unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    "text": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}


def is_diffusers_lora_key(key: str) -> bool:
    """A key in one of diffusers' LoRA layouts (with its component prefix or without)."""
    return bool(_PROCESSOR_KEY.match(key) or _LAYER_KEY.match(key))


def _layer_of(component: str, key: str) -> tuple[str, str] | None:
    """(dotted layer path within the component, "down" or "up") of a converted LoRA key."""
    if match := _PROCESSOR_KEY.match(key):
        names = _PROCESSOR_LAYERS["unet" if component == "unet" else "text"]
        return f"{match.group(1)}.{names[match.group(2)]}", match.group(3)
    if match := _LAYER_KEY.match(key):
        direction = match.group(2) or {"A": "down", "B": "up"}[match.group(3)]
        return match.group(1), direction
    return None


def _fits(module: torch.nn.Module, down: torch.Tensor, up: torch.Tensor | None) -> bool:
    if up is None:
        return False
    if isinstance(module, torch.nn.Linear):
        return down.shape[-1] == module.in_features and up.shape[0] == module.out_features
    if isinstance(module, torch.nn.Conv2d):
        return down.shape[1] == module.in_channels and up.shape[0] == module.out_channels
    return False


def misfit(pipe: Any, state: dict[str, torch.Tensor]) -> str | None:
    """The first layer of a converted LoRA this pipeline lacks or has in another shape."""
    layers: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        component, _, rest = key.partition(".")
        found = _layer_of(component, rest)
        if found is None:
            return f"{key} is not a LoRA weight"
        layers.setdefault((component, found[0]), {})[found[1]] = tensor
    for (component, path), pair in layers.items():
        root = getattr(pipe, component, None)
        if root is None:
            return f"{component} is missing"
        if component.startswith("text_encoder") and not hasattr(root, "text_model"):
            path = path.removeprefix("text_model.")  # transformers 5 dropped that level
        try:
            module = root.get_submodule(path)
        except AttributeError:
            return f"{component}.{path} is missing"
        if "down" not in pair or not _fits(module, pair["down"], pair.get("up")):
            return f"{component}.{path} has another shape"
    return None


class LoraSet:
    """The LoRAs of the loaded model: found, checked, applied for a request, then removed."""

    def __init__(self, pipe: Any, model_path: str, family: Family) -> None:
        self.pipe = pipe
        self.denoiser = family.denoiser  # the component the `UNET` weight of a tag goes to
        # A diffusers folder or a checkpoint file: either way its parent is /data.
        self.folder = Path(model_path).parent / LORA_DIR
        self.family = family.id
        self._files: OrderedDict[tuple[str, int, int], LoraFile] = OrderedDict()
        self._applied: list[str] = []
        self._requires_grad: list[tuple[torch.nn.Parameter, bool]] = []

    def _shown(self, ref: LoraRef) -> str:
        return f"{LORA_DIR}/{ref.file_name}"

    def _find(self, ref: LoraRef) -> Path:
        direct = self.folder / ref.file_name
        if direct.is_file():
            return direct
        nested = sorted(self.folder.rglob(ref.file_name)) if self.folder.is_dir() else []
        if nested:
            return nested[0]
        available = sorted(p.stem for p in self.folder.rglob("*" + LORA_SUFFIX)) \
            if self.folder.is_dir() else []
        have = (f"it has {', '.join(available[:8])}" if available
                else "there is none" if self.folder.is_dir() else "the folder does not exist")
        raise LoraInvalid(
            f"LoRA {ref.name!r} not found: no {self._shown(ref)} beside the model ({have}); "
            f"put {ref.file_name} in a {LORA_DIR}/ folder next to the model and deploy again"
        )

    def _read(self, path: Path, ref: LoraRef) -> LoraFile:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._files:
            self._files[key] = read_lora(path, self._shown(ref))
            while len(self._files) > _CACHED_FILES:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return self._files[key]

    def _converted(self, lora: LoraFile, ref: LoraRef) -> dict[str, torch.Tensor]:
        made_for = lora.made_for()
        if made_for and made_for != self.family and not (
                made_for in UNET_FAMILIES | {UNET} and self.family in UNET_FAMILIES):
            # Refused before any converter sees it: SD 3.5's and FLUX.1's transformers share
            # their layer names, so only the widths would tell, and an SD UNet's kohya names
            # fail FLUX.1's converter with a list of keys rather than a family.
            raise self._misfit(lora, ref, "its metadata or key layout says so")
        if self.denoiser != "unet":
            return self._converted_transformer(lora, ref)
        keys = list(lora.tensors)
        if not keys or not (all(k.startswith(_KOHYA_PREFIXES) for k in keys)
                            or all(k.startswith(_DIFFUSERS_PREFIXES) for k in keys)):
            raise LoraInvalid(
                f"LoRA file {self._shown(ref)} is not a LoRA in the kohya/A1111 or diffusers "
                f"key layout (e.g. key {keys[0] if keys else '(none)'!r})"
            )
        try:
            # The UNet's config lets diffusers map SDXL's sgm block names (kohya trains SDXL on
            # the original UNet) onto this model's blocks.
            return self.pipe.lora_state_dict(lora.copy(),
                                             unet_config=self.pipe.unet.config)[0]
        except Exception as exc:
            if lora.trained_family() not in (None, self.family):
                raise self._misfit(lora, ref, "its blocks do not map onto this UNet") from None
            raise LoraInvalid(f"LoRA file {self._shown(ref)} cannot be read as a LoRA: "
                              f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None

    def _converted_transformer(self, lora: LoraFile, ref: LoraRef) -> dict[str, torch.Tensor]:
        """FLUX.1's and SD 3.5's files, in whatever layout the family's diffusers loader
        converts; keys it leaves outside the pipeline's components are a layout it cannot
        convert (kohya's SD3 names: diffusers 0.42.1 has no converter for them)."""
        try:
            out = self.pipe.lora_state_dict(lora.copy())
        except Exception as exc:
            raise LoraInvalid(
                f"LoRA file {self._shown(ref)} cannot be read as a "
                f"{_FAMILY_NAMES[self.family]} LoRA (kohya/ai-toolkit's or diffusers' layout): "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
        state = out[0] if isinstance(out, tuple) else out
        components = tuple(f"{name}." for name in self.pipe._lora_loadable_modules)
        unread = next((key for key in state if not key.startswith(components)), None)
        if unread is not None:
            raise LoraInvalid(
                f"LoRA file {self._shown(ref)} is in a layout diffusers cannot convert for "
                f"{_FAMILY_NAMES[self.family]} (key {unread!r}); it takes "
                f"{_LAYOUTS[self.family]}")
        return state

    def _misfit(self, lora: LoraFile, ref: LoraRef, problem: str) -> LoraInvalid:
        trained = lora.made_for()
        if trained == UNET and self.family in UNET_FAMILIES:
            trained = lora.trained_family()  # the layout says no more than this model's kind
        elif trained == self.family and self.family not in UNET_FAMILIES:
            trained = None  # FLUX.2's kohya names are FLUX.1's
        made_for = (f"it was trained for {_FAMILY_NAMES.get(trained, trained)}" if trained
                    else "it is for another model")
        return LoraInvalid(
            f"LoRA file {self._shown(ref)} does not fit this "
            f"{_FAMILY_NAMES.get(self.family, self.family)} model: {made_for} ({problem})"
        )

    def check(self, lora: LoraFile, ref: LoraRef) -> None:
        """Every layer the LoRA adapts exists here with the same shape, or one line naming
        the file and the family it was made for."""
        state = self._converted(lora, ref)
        problem = misfit(self.pipe, state)
        if problem:
            raise self._misfit(lora, ref, f"layer {problem}")

    def apply(self, refs: list[LoraRef]) -> list[dict[str, Any]]:
        """Load and activate the request's LoRAs; their records for the image params."""
        self.reset()
        if not refs:
            return []
        files = [(ref, self._read(self._find(ref), ref)) for ref in refs]
        for ref, lora in files:
            self.check(lora, ref)
        records, names, weights = [], [], []
        # peft freezes the layers it wraps (requires_grad False) and unloading leaves them so.
        # That flag picks torch's matmul path for a non-contiguous input, and on some CPUs
        # (AVX-512) the paths round differently: frozen, a LoRA at weight 0 and the next request
        # without one drew other pixels than before (tests/test_lora_families.py). Put back.
        self._requires_grad = [(param, param.requires_grad) for component in
                               self.pipe.components.values()
                               if isinstance(component, torch.nn.Module)
                               for param in component.parameters()]
        try:
            for index, (ref, lora) in enumerate(files):
                adapter = f"sdtui_lora_{index}"
                self.pipe.load_lora_weights(lora.copy(), adapter_name=adapter)
                self._applied.append(adapter)
                names.append(adapter)
                # The text-encoder weight applies to every text encoder the file adapts
                # (SDXL's second one too: diffusers would leave it at 1).
                weights.append({part: ref.unet if part == self.denoiser else ref.text_encoder
                                for part, adapters in self.pipe.get_list_adapters().items()
                                if adapter in adapters})
                records.append({"name": ref.name, "weight": ref.unet,
                                "te_weight": ref.text_encoder, "sha256": lora.sha256[:12],
                                "hash": lora.a1111_hash[:12]})
            self.pipe.set_adapters(names, adapter_weights=weights)
            self._thaw()
        except Exception:
            self.reset()
            raise
        return records

    def reset(self) -> None:
        """Remove every applied adapter: the model is exactly as loaded again."""
        if self._applied:
            self.pipe.unload_lora_weights()
            self._applied.clear()
        self._thaw()
        self._requires_grad.clear()

    def _thaw(self) -> None:
        for param, flag in self._requires_grad:
            param.requires_grad_(flag)
