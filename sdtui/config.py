"""The user's config file, config_dir()/config.toml: defaults for the forms and flags.

    [local]
    docker_host = "unix:///var/run/docker.sock"
    volume = "sdtui-models"
    base_image = "python:3.11-slim"
    models = ["~/models/sd-v1-4.ckpt"]

    [aws]
    profile = "default"
    region = "us-east-1"
    bucket = "my-sd-models"
    instance_type = "g4dn.xlarge"
    spot = false
    idle_minutes = 30
    models = []

    [generate]
    steps = 30            # leave out for the model's (30; FLUX.1 [schnell] 4, [dev] 28)
    cfg = 7.5             # leave out for the model's (7.5; FLUX.2 [klein] base 4)
    guidance = 3.5        # FLUX.1 [dev]'s embedded guidance (leave out for the model's)
    width = 512           # leave out for the model's own size (1024 for SDXL)
    height = 512
    scheduler = "euler_a"  # leave out for the model's (Euler a; Euler for FLUX.1)
    out_dir = "~/Pictures/sdtui"

A missing file means all defaults. Unknown keys and wrong types are rejected with the file, the
key and its line. Relative paths are taken relative to the config file's directory.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui import docker_values
from sdtui.errors import BadInput
from sdtui.paths import config_dir
from sdtui.protocol import GENERATE_FIELDS, ProtocolError, normalize_scheduler
from sdtui.userfiles import expand, read_text

CONFIG_NAME = "config.toml"
# Real config files are a few hundred bytes; this only keeps a wrong file from filling memory.
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LocalConfig:
    docker_host: str | None = None
    volume: str = "sdtui-models"
    base_image: str = "python:3.11-slim"
    models: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class AwsConfig:
    profile: str | None = None
    region: str = "us-east-1"
    bucket: str | None = None
    instance_type: str = "g4dn.xlarge"
    spot: bool = False
    idle_minutes: int = 30
    models: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class GenerateConfig:
    steps: int | None = None  # None: the model's (30; FLUX.1 [schnell] 4, [dev] 28)
    cfg: float | None = None  # None: the model's (7.5; FLUX.2 [klein] base 4)
    width: int | None = None  # None: the model's own size (1024 for SDXL)
    height: int | None = None
    scheduler: str | None = None  # None: the model's (Euler a; Euler for FLUX.1)
    out_dir: Path | None = None
    guidance: float | None = None  # FLUX.1 [dev]'s; None: the model's own (3.5)


@dataclass(frozen=True)
class Config:
    local: LocalConfig = field(default_factory=LocalConfig)
    aws: AwsConfig = field(default_factory=AwsConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    path: Path | None = None  # the file it was read from; None when there was none
    # The keys the file sets, per section: the settings layer takes only these from the
    # config, so a setting's own default (e.g. the AWS profile's region) is not hidden.
    explicit: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def given(self, section: str) -> dict[str, Any]:
        return dict(self.explicit.get(section, {}))


SECTIONS: dict[str, type] = {"local": LocalConfig, "aws": AwsConfig, "generate": GenerateConfig}


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


# --- value checks: each takes the raw TOML value and returns the typed one or raises ValueError


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _pattern(regex: str, what: str) -> Callable[[Any], str]:
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        text = _string(value)
        if not compiled.fullmatch(text):
            raise ValueError(f"not a valid {what}: {text!r}")
        return text

    return check


def _checked(check: Callable[[str], str]) -> Callable[[Any], str]:
    return lambda value: check(_string(value))


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError("an integer")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo} to {hi}, got {value}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _generate_field(name: str) -> Callable[[Any], Any]:
    """Check steps/cfg/width/height exactly as a generate request would."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, GENERATE_FIELDS[name].kind):
            raise TypeError("a number" if name in ("cfg", "guidance") else "an integer")
        try:
            return GENERATE_FIELDS[name].check(name, value)
        except ProtocolError as exc:
            raise ValueError(str(exc).removeprefix(f"{name} ")) from None

    return check


def _scheduler(value: Any) -> str:
    try:
        return normalize_scheduler(_string(value))
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


def _path(base: Path) -> Callable[[Any], Path]:
    def check(value: Any) -> Path:
        try:
            path = expand(_string(value), "path")
        except BadInput as exc:
            raise ValueError(exc.message) from None
        return path if path.is_absolute() else base / path

    return check


def _paths(base: Path) -> Callable[[Any], list[Path]]:
    one = _path(base)

    def check(value: Any) -> list[Path]:
        if not isinstance(value, list):
            raise TypeError("a list of paths")
        try:
            return [one(item) for item in value]
        except TypeError:
            raise TypeError("a list of paths (strings)") from None

    return check


def _checks(base: Path) -> dict[str, dict[str, Callable[[Any], Any]]]:
    return {
        "local": {
            "docker_host": _checked(docker_values.engine_url),
            "volume": _checked(docker_values.volume_name),
            "base_image": _checked(docker_values.image_name),
            "models": _paths(base),
        },
        "aws": {
            "profile": _pattern(r"[^\s\[\]]+", "profile name"),
            "region": _pattern(r"[a-z]{2}(-[a-z]+)+-\d+", "AWS region (e.g. us-east-1)"),
            "bucket": _pattern(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "S3 bucket name"),
            "instance_type": _pattern(r"[a-z0-9-]+\.[a-z0-9-]+", "instance type"),
            "spot": _boolean,
            "idle_minutes": _integer(0, 7 * 24 * 60),
            "models": _paths(base),
        },
        "generate": {
            "steps": _generate_field("steps"),
            "cfg": _generate_field("cfg"),
            "guidance": _generate_field("guidance"),
            "width": _generate_field("width"),
            "height": _generate_field("height"),
            "scheduler": _scheduler,
            "out_dir": _path(base),
        },
    }


# --- locating keys for error messages ------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]")
_KEY = re.compile(r"\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """The line where `key` is set in `[section]` (or the header line when key is None).
    A plain scan: good enough for naming a line in an error message."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            current = header.group(1).strip("\"'")
            if key is None and current == section:
                return number
            continue
        found = _KEY.match(line)
        if found and current == section and found.group(1).strip('"') == key:
            return number
    return None


def _bad(path: Path, text: str, section: str, key: str | None, problem: str, fix: str) -> BadInput:
    line = _line_of(text, section, key)
    where = f"{path}" + (f", line {line}" if line else "")
    name = f"[{section}] {key}" if key else f"[{section}]"
    return BadInput(f"{where}: {name} {problem}", fix=fix)


# --- loading -----------------------------------------------------------------------------------


def load_config(path: Path | None = None) -> Config:
    """Read the config file (config_dir()/config.toml unless `path` is given)."""
    path = Path(path) if path else config_path()
    if not path.exists() and not path.is_symlink():
        return Config()
    text = read_text(path, "the config file", MAX_CONFIG_BYTES, fix="fix or remove that file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}", fix="fix the syntax there") from None

    checks = _checks(path.parent)
    sections: dict[str, Any] = {}
    explicit: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise BadInput(
                f"{path}: unknown section [{section}]",
                fix=f"valid sections: {', '.join(f'[{s}]' for s in SECTIONS)}",
            )
        if not isinstance(values, dict):
            raise _bad(path, text, section, None, "must be a table", f"write it as [{section}]")
        valid = checks[section]
        typed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in valid:
                raise _bad(
                    path,
                    text,
                    section,
                    key,
                    "is not a known key",
                    f"valid keys: {', '.join(valid)}",
                )
            try:
                typed[key] = valid[key](value)
            except TypeError as exc:
                raise _bad(
                    path, text, section, key, f"must be {exc}", "fix its value or remove the line"
                ) from None
            except ValueError as exc:
                raise _bad(
                    path, text, section, key, f"{exc}", "fix its value or remove the line"
                ) from None
        sections[section] = SECTIONS[section](**typed)
        explicit[section] = typed
    return Config(**sections, path=path, explicit=explicit)
