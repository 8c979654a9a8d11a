"""What was used last, shared by the app and `sdtui --no-ui`: the default deployment (the one a
bare `--status`, `--teardown` or generation means) and the values each option's settings and
the prompt form last had, so they survive a restart and a teardown.

Kept in state_dir()/recent.json, changed under the ledgers' lock and replaced atomically. It is
a convenience: a missing or unreadable file means nothing was used yet, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui.ledger import NAME_PATTERN, OPTIONS, locked, write_json_atomic
from sdtui.paths import state_dir
from sdtui.settings import jsonable

SCHEMA_VERSION = 1
FILE_NAME = "recent.json"
_TABLES = ("last_of_option", "settings", "generate", "app")


@dataclass(frozen=True)
class Recent:
    current: tuple[str, str] | None = None  # (name, option) of the deployment last used
    last_of_option: dict[str, str] = field(default_factory=dict)  # option -> name
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # option -> values
    generate: dict[str, Any] = field(default_factory=dict)  # the prompt form's values
    app: dict[str, Any] = field(default_factory=dict)  # the app's own choices (lock_seed)


def path() -> Path:
    return state_dir() / FILE_NAME


def _read() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        return {}
    for key in _TABLES:  # a table that is no table is dropped, so changes can be applied
        if not isinstance(data.get(key, {}), dict):
            del data[key]
    return data


def _deployment(name: Any, option: Any) -> bool:
    """A name and option a deployment can have (what another version or a hand edit left
    is ignored, not an error)."""
    return (isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None
            and option in OPTIONS)


def load() -> Recent:
    data = _read()
    current = data.get("current")
    valid = (isinstance(current, list) and len(current) == 2
             and _deployment(current[0], current[1]))

    def table(key: str) -> dict[str, Any]:
        value = data.get(key)
        return value if isinstance(value, dict) else {}

    return Recent(
        current=(current[0], current[1]) if valid else None,
        last_of_option={k: v for k, v in table("last_of_option").items() if _deployment(v, k)},
        settings={k: v for k, v in table("settings").items() if isinstance(v, dict)},
        generate=table("generate"),
        app=table("app"),
    )


def _change(apply: Callable[[dict[str, Any]], None]) -> None:
    with locked():
        data = _read() or {"schema": SCHEMA_VERSION}
        apply(data)
        write_json_atomic(path(), data)


def use_deployment(name: str, option: str) -> None:
    """Make this deployment the default one."""

    def apply(data: dict[str, Any]) -> None:
        data["current"] = [name, option]
        data.setdefault("last_of_option", {})[option] = name

    _change(apply)


def remember_settings(option: str, values: Mapping[str, Any]) -> None:
    _change(lambda data: data.setdefault("settings", {}).__setitem__(option, jsonable(values)))


def remember_generate(values: Mapping[str, Any]) -> None:
    _change(lambda data: data.__setitem__("generate", jsonable(values)))


def remember_app(**values: Any) -> None:
    _change(lambda data: data.setdefault("app", {}).update(jsonable(values)))
