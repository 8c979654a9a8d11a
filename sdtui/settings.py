"""Typed settings and the one precedence rule.

Each option's settings (`LocalSettings`, `AwsSettings`) and a generation request
(`GenerateSettings`) are dataclasses. Both front ends translate what the user gave (command-line
flags, or a form) into a `Given`; the core fills in each settings field from the first layer
that sets it:

    flags or form  >  the deployment's ledger (or, once it is gone, the values last used)
                   >  the config file  >  the dataclass's defaults

`resolve` is that rule, in this one place. Stdlib only, so the command line can build a `Given`
without loading a front end or a deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Layer = Mapping[str, Any]


@dataclass(frozen=True)
class Given:
    """What the user asked for, from flags or a form. A missing key, None or "" means "not
    given": the lower layers decide."""

    option: str | None = None
    name: str | None = None
    deployment: Mapping[str, Any] = field(default_factory=dict)
    generate: Mapping[str, Any] = field(default_factory=dict)
    # Deployment fields a form emptied: the default (config, then built-in), never the value
    # the ledger or the last use holds.
    cleared: frozenset[str] = frozenset()


def is_set(value: Any) -> bool:
    return value is not None and value != "" and value != []


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def check_keys(cls: type, layer: Layer, where: str) -> None:
    """A key that is no field of `cls` is a programming error, not bad input."""
    unknown = set(layer) - set(field_names(cls))
    if unknown:
        raise TypeError(f"{where}: {cls.__name__} has no field(s) {', '.join(sorted(unknown))}")


def resolve(cls: type[T], layers: Iterable[Layer], **fixed: Any) -> T:
    """An instance of the settings dataclass `cls`: each field from the first layer (highest
    precedence first) that sets it, else the field's own default. `fixed` values always win
    (for what no user chooses, such as a deployment's name once it is decided). A field with
    no default that no layer sets is None: the option's checks say what is missing."""
    layers = list(layers)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
            continue
        for layer in layers:
            if is_set(layer.get(f.name)):
                values[f.name] = layer[f.name]
                break
        else:
            if f.default is MISSING and f.default_factory is MISSING:
                values[f.name] = None  # a field with no default that no layer sets: unset
    return cls(**values)


# What each annotated type is once stored as JSON (a path is a string).
_STORED = {"str": str, "Path": str, "int": int, "float": (int, float), "bool": bool,
           "None": type(None)}


def _alternatives(annotation: str) -> list[str]:
    """`list[Path | str] | None` -> ["list[Path|str]", "None"]: the `|` outside brackets."""
    parts, depth, start = [], 0, 0
    text = annotation.replace(" ", "")
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _fits(value: Any, annotation: str) -> bool:
    for part in _alternatives(annotation):
        if part.startswith("list[") and part.endswith("]"):
            if isinstance(value, list) and all(_fits(v, part[5:-1]) for v in value):
                return True
        elif part not in _STORED:
            return True  # a type this check does not know: not judged
        elif isinstance(value, _STORED[part]) and not (
                isinstance(value, bool) and part in ("int", "float")):
            return True
    return False


def mistyped(cls: type, stored: Layer) -> list[str]:
    """The fields of `cls` whose value in `stored` (settings read back from JSON: a ledger's
    params, recent.json) is not of the field's type; None is "not set" and always fits."""
    return [f.name for f in fields(cls) if stored.get(f.name) is not None
            and isinstance(f.type, str) and not _fits(stored[f.name], f.type)]


def jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings values as JSON (paths as strings), for the state dir."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in values.items()}
