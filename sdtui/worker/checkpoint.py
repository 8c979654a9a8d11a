"""Reading a single-file checkpoint (.safetensors or .ckpt) into the tensors the model keeps.

Memory: each tensor is read, cast to the dtype it will run in and moved to its device one at a
time, so a load never holds the file's bytes beside the model, and on a GPU never a float32
copy of a model that runs in float16. Tensors the model never uses (EMA copies, DDPM schedule
buffers, ...) are skipped before they are read (.safetensors) or cast (.ckpt).

- .safetensors: the header is parsed, then the file is read front to back with plain reads
  straight into each tensor's memory: no mmap (slow on s3fs), no whole-file buffer.
- .ckpt: torch's weights-only unpickler, so no pickled code runs. Training checkpoints pickle a
  few harmless objects beside the weights (Lightning callbacks, numpy scalars); those on a short
  allowlist are read as inert placeholders, anything else (builtins.exec, os.system, ...) refuses
  the file, naming the object.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdtui.headers import safetensors_table

log = logging.getLogger(__name__)

Wanted = Callable[[str], bool]


class ModelInvalid(Exception):
    """A model that is missing, corrupt, hostile or of no family sdtui loads. The message names
    the file (and the family, once it is known)."""

    def __init__(self, message: str, family: str | None = None) -> None:
        super().__init__(message)
        self.family = family


def unwrap_state_dict(checkpoint: Any) -> Any:
    while isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return checkpoint


def _final(tensor: torch.Tensor, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The tensor as the model keeps it: floating point in `dtype`, on `device`."""
    if tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.to(device)


# --- .safetensors ----------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
# A safetensors header is a JSON object of some kilobytes; this only rejects nonsense.
MAX_HEADER = 100 * 1024 * 1024


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The tensor entries (name -> dtype, shape, data_offsets) and where the data starts."""
    with open(path, "rb") as f:
        found = safetensors_table(f)
        if found is not None:
            table, data_start = found
            return {k: v for k, v in table.items() if k != "__metadata__"}, data_start
        f.seek(0)  # say what is wrong with it
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelInvalid(f"model file {path} is empty or truncated (no safetensors header)")
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= MAX_HEADER:
            raise ModelInvalid(f"model file {path} has no valid safetensors header (corrupt?)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ModelInvalid(f"model file {path} has a corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ModelInvalid(f"model file {path} has a corrupt safetensors header")
    header.pop("__metadata__", None)
    return header, 8 + length


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    header, _ = safetensors_header(path)
    return {name: tuple(entry.get("shape", ())) for name, entry in header.items()}


def _entry(path: Path, name: str, entry: Any, data_size: int) -> tuple[torch.dtype, list, int, int]:
    try:
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        shape = [int(n) for n in entry["shape"]]
        start, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ModelInvalid(f"model file {path}: tensor {name} has a corrupt or unsupported "
                           f"header entry {json.dumps(entry)[:80]}") from None
    numel = 1
    for n in shape:
        numel *= n
    if not 0 <= start <= end <= data_size or end - start != numel * dtype.itemsize:
        raise ModelInvalid(f"model file {path} is truncated or corrupt: tensor {name} lies "
                           f"outside the file or has the wrong size")
    return dtype, shape, start, end


def read_safetensors(path: Path, wanted: Wanted, dtype: torch.dtype,
                     device: str = "cpu") -> dict[str, torch.Tensor]:
    header, data_start = safetensors_header(path)
    data_size = path.stat().st_size - data_start
    entries = []
    for name, entry in header.items():
        stored, shape, start, end = _entry(path, name, entry, data_size)
        if wanted(name):
            entries.append((start, end, name, stored, shape))
    entries.sort()
    staging = _Staging(device)
    tensors: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as f:
        for start, end, name, stored, shape in entries:
            final = device == "cpu" and (stored == dtype or not stored.is_floating_point)
            # Read straight into the tensor the model keeps; what is cast or moved to a GPU
            # goes through one reused buffer, so no second copy of the model ever exists.
            raw = torch.empty(end - start, dtype=torch.uint8) if final else staging.take(
                end - start)
            f.seek(data_start + start)
            _read_into(f, raw, path, name)
            tensor = raw.view(stored).reshape(shape)
            tensors[name] = tensor if final else _final(tensor.to(device), dtype, device)
    return tensors


class _Staging:
    """One buffer for the tensors that are cast or moved after reading, grown as needed."""

    def __init__(self, device: str) -> None:
        self.pin = device.startswith("cuda")
        self.buffer = torch.empty(0, dtype=torch.uint8)

    def take(self, size: int) -> torch.Tensor:
        if self.buffer.numel() < size:
            self.buffer = torch.empty(0, dtype=torch.uint8)  # free the old one first
            self.buffer = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
        return self.buffer[:size]


def _read_into(f: Any, raw: torch.Tensor, path: Path, name: str) -> None:
    view, filled = memoryview(raw.numpy()), 0
    while filled < len(view):
        got = f.readinto(view[filled:])
        if not got:
            raise ModelInvalid(f"model file {path} is truncated (tensor {name})")
        filled += got


# --- .ckpt -----------------------------------------------------------------------------------

# Objects that training tools pickle beside the weights and that mean nothing for inference.
# Matched as exact names or, ending in ".", as module prefixes.
HARMLESS_LEFTOVERS = (
    "pytorch_lightning.callbacks.",  # ModelCheckpoint & co. in a Lightning checkpoint's state
    "lightning.pytorch.callbacks.",
    "pytorch_lightning.utilities.parsing.AttributeDict",  # Lightning's hyper-parameters
    "lightning.fabric.utilities.data.AttributeDict",
    "numpy.core.multiarray.scalar",  # metrics and loop counters as numpy scalars and arrays
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.",
    "_codecs.encode",  # how protocol-2 pickles spell the bytes of a numpy scalar
    "argparse.Namespace",  # a training script's command line
)


def is_harmless(name: str) -> bool:
    return any(name == allowed or (allowed.endswith(".") and name.startswith(allowed))
               for allowed in HARMLESS_LEFTOVERS)


class _Inert:
    """Stands in for a harmless leftover: accepts any arguments and state, does nothing."""

    def __new__(cls, *args: object, **kwargs: object) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _pickled_globals(path: Path) -> set[str]:
    """Every class or function the checkpoint's pickles name, read without unpickling them:
    every pickle in a zip (a decoy beside the one torch reads must not hide it), and all four of
    a legacy file (magic number, protocol, sys info, then the object)."""
    from torch._weights_only_unpickler import get_globals_in_pkl

    found: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for record in archive.namelist():
                    if record.endswith(".pkl"):
                        with archive.open(record) as pkl:
                            found |= get_globals_in_pkl(pkl)
            return found
        with open(path, "rb") as f:
            for _ in range(4):
                found |= get_globals_in_pkl(f)
    except (pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ModelInvalid(f"model file {path} holds pickled data sdtui cannot check "
                           f"({_first_line(error)}); sdtui refuses to load it (nothing was "
                           "run); use a .safetensors copy of the model") from None
    return found


def _first_line(error: BaseException) -> str:
    """An error's text as one plain line (torch's carry several, with ANSI codes)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0]).strip()


def _torch_load(path: Path, stubs: list[tuple[type, str]] | None = None) -> Any:
    with torch.serialization.safe_globals(stubs or []):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)


def python3_name(name: str) -> str:
    """What a pickled global resolves to: torch.save writes protocol 2, which spells some
    Python 3 names the Python 2 way (subprocess.call is `commands.call`)."""
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    module, _, attr = name.rpartition(".")
    if (module, attr) in NAME_MAPPING:
        return ".".join(NAME_MAPPING[(module, attr)])
    return f"{IMPORT_MAPPING.get(module, module)}.{attr}"


def load_pickled(path: Path) -> Any:
    try:
        return _torch_load(path)
    except pickle.UnpicklingError:
        pass
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())
    named = sorted(_pickled_globals(path) - allowed)
    hostile = [python3_name(name) for name in named if not is_harmless(python3_name(name))]
    if hostile:
        raise ModelInvalid(
            f"model file {path} holds pickled code, not just weights: {', '.join(hostile)}; "
            "sdtui refuses to load it (nothing was run); use a .safetensors copy of the model "
            "or one from a source you trust")
    log.info("%s holds training leftovers %s; reading them as placeholders", path, named)
    stubs = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in named]
    try:
        return _torch_load(path, stubs)
    except pickle.UnpicklingError as error:  # something the static scan could not see
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = python3_name(named.group(1)) if named else "objects outside torch's allowlist"
        raise ModelInvalid(f"model file {path} holds pickled {what}, which sdtui will not "
                           "load (nothing was run); use a .safetensors copy of the model") from None


def is_legacy_ckpt(path: Path) -> bool:
    return not zipfile.is_zipfile(path)


def _take(state: dict[Any, Any], wanted: Wanted, dtype: torch.dtype,
          device: str) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name in list(state):
        value = state.pop(name)  # each float32 original is freed as soon as it is cast
        if isinstance(value, torch.Tensor) and isinstance(name, str) and wanted(name):
            tensors[name] = _final(value, dtype, device)
    return tensors


class Checkpoint:
    """An opened single-file checkpoint: its tensors' names and shapes, known before any
    weight is read (from a .safetensors header; a .ckpt has to be unpickled for them)."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.format = path, fmt
        self._pickled: dict[Any, Any] | None = None
        if fmt == "safetensors":
            self.shapes = safetensors_shapes(path)
            return
        try:
            state = unwrap_state_dict(load_pickled(path))
        except ModelInvalid:
            raise
        except Exception as error:
            raise ckpt_failure(path, error) from error
        if not isinstance(state, dict):
            raise ModelInvalid(f"model file {path} holds no state dict of tensors")
        self._pickled = state
        self.shapes = {k: tuple(v.shape) for k, v in state.items()
                       if isinstance(k, str) and isinstance(v, torch.Tensor)}

    def read(self, wanted: Wanted, dtype: torch.dtype,
             device: str = "cpu") -> dict[str, torch.Tensor]:
        """The wanted tensors, each in `dtype` on `device`; a checkpoint is read once."""
        if self._pickled is None:
            return read_safetensors(self.path, wanted, dtype, device)
        state, self._pickled = self._pickled, {}
        return _take(state, wanted, dtype, device)


def ckpt_failure(path: Path, error: Exception) -> ModelInvalid:
    """What to tell the user about a .ckpt torch could not read."""
    kind = type(error).__name__
    if is_legacy_ckpt(path):
        return ModelInvalid(
            f"model file {path} is a legacy PyTorch checkpoint (the pre-1.6 non-zip torch.save "
            f"format) and could not be read ({kind}); re-save it with a current PyTorch or "
            "use a .safetensors copy of the model")
    return ModelInvalid(f"model file {path} cannot be read (truncated or corrupt?): {kind}")
