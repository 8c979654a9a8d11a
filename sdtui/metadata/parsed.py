"""What a metadata reader found: request parameters, plus what sdtui cannot honour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdtui import samplers
from sdtui.errors import BadInput


@dataclass
class Parsed:
    tool: str  # who wrote the file, as users know it
    params: dict[str, Any] = field(default_factory=dict)
    # Recorded values sdtui cannot reproduce, as "Key: value"; named in one warning line.
    ignored: list[str] = field(default_factory=list)
    # A sampler name sdtui does not have: a bad-input error unless --scheduler replaces it.
    unknown_sampler: str | None = None

    def set_sampler(self, label: str) -> None:
        try:
            sampler, implied = samplers.parse(label)
        except samplers.UnknownSampler:
            self.unknown_sampler = label
            return
        self.params["scheduler"] = sampler
        if implied:
            self.params["schedule"] = implied

    def set_schedule(self, label: str) -> None:
        try:
            self.params["schedule"] = samplers.parse_schedule(label)
        except samplers.UnknownSampler:
            self.ignored.append(f"Schedule type: {label}")

    def ignore(self, key: str, value: Any) -> None:
        self.ignored.append(f"{key}: {value}")


def bad_value(tool: str, key: str, value: Any, kind: str) -> BadInput:
    shown = repr(value) if isinstance(value, str) else value
    if isinstance(shown, str) and len(shown) > 40:
        shown = shown[:40] + "…"
    return BadInput(f"the {tool} metadata's {key} should be {kind}, got {shown}",
                    fix="the file's metadata is damaged; pass the values as flags instead")


def to_int(tool: str, key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise bad_value(tool, key, value, "a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 40:
        return int(value)
    raise bad_value(tool, key, value, "a whole number")


def to_float(tool: str, key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise bad_value(tool, key, value, "a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and len(value) < 40:
        try:
            return float(value)
        except ValueError:
            pass
    raise bad_value(tool, key, value, "a number")
