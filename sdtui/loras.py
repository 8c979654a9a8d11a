"""A1111's LoRA prompt syntax, `<lora:NAME:WEIGHT>`. Stdlib only: the client checks a prompt
before anything is created, the worker strips the tags before encoding and applies the files.

    <lora:NAME>             weight 1
    <lora:NAME:W>           weight W on the text encoder and the UNet
    <lora:NAME:TE:UNET>     separate weights, as A1111 reads them (`<lyco:...>` is the same)

NAME.safetensors is looked up in the `loras/` folder beside the model. The tags are removed
from the text that is encoded, exactly as A1111 removes them; the prompt recorded with the
image keeps them, so a re-run applies the same LoRAs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

LORA_DIR = "loras"
LORA_SUFFIX = ".safetensors"
MAX_LORAS = 16
MAX_WEIGHT = 10.0

# A1111's extra-network syntax (modules/extra_networks.py: `<(\w+):([^>]+)>`).
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_LORA_TYPES = ("lora", "lyco")
_UNSUPPORTED_TYPES = {"hypernet": "hypernetworks"}


class LoraSyntaxError(ValueError):
    """A `<lora:...>` tag sdtui cannot apply; the message is one line naming it."""


@dataclass(frozen=True)
class LoraRef:
    name: str
    text_encoder: float
    unet: float

    @property
    def file_name(self) -> str:
        return self.name + LORA_SUFFIX


def _weight(tag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LoraSyntaxError(f"{tag}: weight {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_WEIGHT:
        raise LoraSyntaxError(f"{tag}: weight {text} must be from -{MAX_WEIGHT:g} to "
                              f"{MAX_WEIGHT:g}")
    return value


def _check_name(tag: str, name: str) -> str:
    name = name.strip()
    if not name:
        raise LoraSyntaxError(f"{tag}: no LoRA name")
    if "/" in name or "\\" in name or name.startswith(".") or "\x00" in name or len(name) > 200:
        raise LoraSyntaxError(f"{tag}: the LoRA name must be a file name in {LORA_DIR}/ "
                              f"without its {LORA_SUFFIX} suffix")
    return name


def _ref(tag: str, args: str) -> LoraRef:
    name, *weights = args.split(":")
    name = _check_name(tag, name)
    if len(weights) > 2 or any("=" in w for w in weights):
        raise LoraSyntaxError(f"{tag}: write <lora:NAME>, <lora:NAME:WEIGHT> or "
                              "<lora:NAME:TEXT_ENCODER_WEIGHT:UNET_WEIGHT>")
    values = [_weight(tag, w) for w in weights] or [1.0]
    return LoraRef(name, values[0], values[-1])


def parse_prompt(prompt: str, negative_prompt: str = "") -> tuple[str, list[LoraRef]]:
    """The prompt without its LoRA tags, and the LoRAs in the order they appear."""
    for match in _EXTRA_NETWORK.finditer(negative_prompt):
        if match.group(1).lower() in _LORA_TYPES:
            raise LoraSyntaxError(f"{match.group(0)} is in the negative prompt; LoRA tags apply "
                                  "from the prompt, so move it there")
    refs: list[LoraRef] = []

    def take(match: re.Match[str]) -> str:
        kind = match.group(1).lower()
        if kind in _UNSUPPORTED_TYPES:
            raise LoraSyntaxError(f"{match.group(0)}: {_UNSUPPORTED_TYPES[kind]} are not "
                                  "supported; only <lora:...> tags are")
        if kind not in _LORA_TYPES:
            return match.group(0)  # not an extra network: leave the text alone
        ref = _ref(match.group(0), match.group(2))
        if any(r.name == ref.name for r in refs):
            raise LoraSyntaxError(f"LoRA {ref.name!r} is named twice in the prompt; "
                                  "give it once with the weight you want")
        refs.append(ref)
        return ""

    text = _EXTRA_NETWORK.sub(take, prompt)
    if len(refs) > MAX_LORAS:
        raise LoraSyntaxError(f"the prompt names {len(refs)} LoRAs; at most {MAX_LORAS} apply "
                              "at once")
    return text, refs
