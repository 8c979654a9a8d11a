"""A1111's own API models (tests/vendor/a1111_api/models.py, vendored unmodified), loaded with
stand-ins for what it imports, and `valid()`, which checks an answer against one of them.

The stand-ins are the least its module body reads: `modules.processing`'s two classes (only
their `__init__` signatures feed the request models, which these tests do not use),
`modules.shared` (`sd_upscalers` for a description string, `opts` for OptionsModel, `parser`
for FlagsModel) and `inflection.underscore` (the real function, which only the request models
call). `opts` holds A1111's own defaults (`modules/shared_options.py`) for the options sdtui
answers, so OptionsModel has those fields with A1111's types (`typemap` is A1111's: an int
option is a float).
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from vendor_loader import load_vendored

VENDORED = Path(__file__).resolve().parents[1] / "vendor" / "a1111_api" / "models.py"

# modules/shared_options.py: (default, label) of the options `GET /sdapi/v1/options` answers.
_OPTIONS = {
    "sd_model_checkpoint": (None, "Stable Diffusion checkpoint"),
    "sd_checkpoint_hash": ("", "SHA256 hash of the current checkpoint"),
    "show_progress_every_n_steps": (10, "Live preview display period"),
    "live_previews_enable": (True, "Show live previews of the created image"),
    "samples_format": ("png", "File format for images"),
    "samples_save": (True, "Always save all generated images"),
    "sd_vae": ("Automatic", "SD VAE"),
}


class _Processing:
    def __init__(self, **kwargs: Any) -> None:  # "self" and "kwargs" are in API_NOT_ALLOWED
        pass


def _underscore(word: str) -> str:
    """inflection.underscore (inflection 0.5.1, MIT)."""
    word = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", word)
    word = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", word)
    return word.replace("-", "_").lower()


def _stubs() -> dict[str, ModuleType]:
    processing = ModuleType("modules.processing")
    processing.StableDiffusionProcessingTxt2Img = type("StableDiffusionProcessingTxt2Img",
                                                       (_Processing,), {})
    processing.StableDiffusionProcessingImg2Img = type("StableDiffusionProcessingImg2Img",
                                                       (_Processing,), {})
    shared = ModuleType("modules.shared")
    shared.sd_upscalers = []
    shared.opts = SimpleNamespace(
        data_labels={k: SimpleNamespace(default=d, label=label)
                     for k, (d, label) in _OPTIONS.items()},
        data={}, typemap={int: float})
    shared.parser = argparse.ArgumentParser()
    inflection = ModuleType("inflection")
    inflection.underscore = _underscore
    modules = ModuleType("modules")
    modules.processing, modules.shared = processing, shared
    return {"modules": modules, "modules.processing": processing, "modules.shared": shared,
            "inflection": inflection}


def _load() -> ModuleType:
    with warnings.catch_warnings():
        # A1111's models use pydantic v1's class Config, which v2 honours with a warning.
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_vendored("a1111_api_models", VENDORED, _stubs())


models = _load()


def valid(model: Any, answer: Any) -> Any:
    """The answer validated by A1111's model (a list: each item), with no key the model lacks
    (pydantic would drop one silently)."""
    if isinstance(answer, list):
        return [valid(model, item) for item in answer]
    assert isinstance(answer, dict), answer
    assert set(answer) <= set(model.model_fields), set(answer) - set(model.model_fields)
    return model.model_validate(answer)
