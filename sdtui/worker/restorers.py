"""Load GFPGAN and Real-ESRGAN weights through spandrel's architecture classes.

spandrel's package import builds a registry of every architecture it knows, and two of them
(LaMa, RestoreFormer) import torchvision, which does not install beside a CPU torch wheel.
Only the GFPGAN and ESRGAN architectures are needed here and neither touches torchvision, so
when the full import fails they are imported without running spandrel's registry.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

from sdtui.errors import BadInput

GFPGAN_FILE = "GFPGANv1.3.pth"
ESRGAN_FILES = {2: "RealESRGAN_x2plus.pth", 4: "RealESRGAN_x4plus.pth"}


class WeightsInvalid(BadInput):
    """A weights file that is missing or is not the architecture it should be."""


def _spandrel_architectures() -> tuple[Any, Any]:
    try:
        import spandrel  # noqa: F401  (the normal path, where torchvision works)
    except Exception:
        spec = importlib.util.find_spec("spandrel")
        if spec is None or not spec.submodule_search_locations:
            raise
        bare = types.ModuleType("spandrel")
        bare.__path__ = list(spec.submodule_search_locations)
        bare.__spec__ = spec
        sys.modules["spandrel"] = bare
    from spandrel.architectures.ESRGAN import ESRGANArch
    from spandrel.architectures.GFPGAN import GFPGANArch

    return GFPGANArch(), ESRGANArch()


def _unwrap(state: Any) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint as BasicSR-based tools save them (params_ema / params)."""
    if isinstance(state, dict):
        for key in ("params_ema", "params", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                return _unwrap(state[key])
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            prefix = "module."
            if all(k.startswith(prefix) for k in state):
                return {k.removeprefix(prefix): v for k, v in state.items()}
            return state
    raise WeightsInvalid("no state dict of tensors inside")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True))


def load_restorer(path: Path, kind: str) -> Any:
    """A spandrel ImageModelDescriptor for `kind` ("GFPGAN" or "ESRGAN") in eval mode.
    Raises WeightsInvalid naming the file when it is missing or another architecture."""
    names = {"GFPGAN": GFPGAN_FILE, "ESRGAN": "Real-ESRGAN"}
    if not path.is_file():
        raise WeightsInvalid(
            f"{names[kind]} weights not found: expected {path}",
            fix=f"put {path.name} next to the model (in /data) and deploy again",
        )
    try:
        state = read_state_dict(path)
    except WeightsInvalid:
        raise WeightsInvalid(f"{path} holds no weights",
                             fix=f"use the {names[kind]} release file") from None
    except Exception as exc:
        raise WeightsInvalid(f"{path} cannot be read: {type(exc).__name__}: {exc}",
                             fix=f"download {path.name} again") from None
    gfpgan, esrgan = _spandrel_architectures()
    arch = gfpgan if kind == "GFPGAN" else esrgan
    if not arch.detect(state):
        raise WeightsInvalid(
            f"{path} is not {names[kind]} weights (its layers match another architecture)",
            fix=f"use the {names[kind]} release file ({_expected(kind)})",
        )
    try:
        model = arch.load(state)
    except Exception as exc:
        raise WeightsInvalid(
            f"{path} does not fit the {names[kind]} architecture: {exc}",
            fix=f"use the {names[kind]} release file ({_expected(kind)})",
        ) from None
    return model.eval()


def _expected(kind: str) -> str:
    return GFPGAN_FILE if kind == "GFPGAN" else " or ".join(ESRGAN_FILES.values())


def listed_upscalers(weights_dir: Path) -> list[dict[str, Any]]:
    """The Real-ESRGAN files beside the model, for `ready`: `scale` and `path`."""
    return [{"scale": scale, "path": str(weights_dir / name)}
            for scale, name in sorted(ESRGAN_FILES.items()) if (weights_dir / name).is_file()]
