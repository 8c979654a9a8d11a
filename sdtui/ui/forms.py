"""The deployment forms' fields, their defaults (config file, then the ledger) and their checks.

UI-free: the deployment screen renders these fields and shows each check's message next to
its field; the settings themselves come from the core (LocalSettings, AwsSettings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdtui.config import Config
from sdtui.errors import BadInput
from sdtui.ledger import Ledger, validate_name
from sdtui.modelfiles import detect_format

Option = Literal["local", "aws"]


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    placeholder: str = ""
    kind: Literal["text", "bool"] = "text"


LOCAL_FIELDS = (
    FormField("name", "Deployment name", "local"),
    FormField("models", "Model files", "~/Downloads/sd-v1-4.ckpt, GFPGANv1.3.pth"),
    FormField("docker_host", "Docker host/context", "default: DOCKER_HOST or the context"),
    FormField("volume", "Volume", "sdtui-models"),
    FormField("base_image", "Base image", "python:3.11-slim"),
)
AWS_FIELDS = (
    FormField("name", "Deployment name", "aws"),
    FormField("models", "Model files", "~/Downloads/sd-v1-4.ckpt"),
    FormField("profile", "AWS profile", "default"),
    FormField("region", "Region", "us-east-1"),
    FormField("bucket", "Bucket", "my-sd-models"),
    FormField("instance_type", "Instance type", "g4dn.xlarge"),
    FormField("spot", "Spot instance", kind="bool"),
    FormField("idle_minutes", "Idle auto-stop (minutes)", "30"),
)
FIELDS: dict[Option, tuple[FormField, ...]] = {"local": LOCAL_FIELDS, "aws": AWS_FIELDS}


def split_paths(text: str) -> list[Path]:
    return [Path(p.strip()).expanduser() for p in text.split(",") if p.strip()]


def join_paths(paths: list[Any]) -> str:
    return ", ".join(str(p) for p in paths)


def defaults(option: Option, config: Config, ledger: Ledger | None) -> dict[str, Any]:
    """The form's initial values: the config file, overridden by what the deployment was last
    made with."""
    last = ledger.params if ledger and ledger.option == option else {}
    if option == "local":
        c = config.local
        values: dict[str, Any] = {
            "name": "local", "docker_host": c.docker_host or "", "volume": c.volume,
            "base_image": c.base_image, "models": join_paths(c.models),
        }
    else:
        a = config.aws
        values = {
            "name": "aws", "profile": a.profile or "", "region": a.region,
            "bucket": a.bucket or "", "instance_type": a.instance_type, "spot": a.spot,
            "idle_minutes": str(a.idle_minutes), "models": join_paths(a.models),
        }
    if ledger and last:
        values["name"] = ledger.name
        for key, value in last.items():
            if key not in values or value in (None, ""):
                continue
            values[key] = join_paths(value) if key == "models" else value
    return values


# --- per-field checks: each raises BadInput with the one-line message shown next to the field


def _check_models(text: str) -> None:
    paths = split_paths(text)
    if not paths:
        raise BadInput("no model given", fix="enter the path of a .ckpt, .safetensors or folder")
    detect_format(paths[0])
    for extra in paths[1:]:
        if not extra.is_file():
            raise BadInput(f"model file {extra} does not exist", fix="check the path")


def _check_idle(text: str) -> None:
    try:
        minutes = int(text)
    except ValueError:
        raise BadInput(f"{text!r} is not a number of minutes", fix="enter e.g. 30") from None
    if minutes < 1:
        raise BadInput("idle minutes must be 1 or more", fix="enter e.g. 30")


def _aws_check(name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        from sdtui.deploy.aws import settings as aws

        {"bucket": aws.check_bucket_name, "instance_type": aws.check_instance_type,
         "region": lambda v: aws.resolve_region(v or None, None)}[name](value)

    return check


CHECKS: dict[Option, dict[str, Callable[[str], None]]] = {
    "local": {"name": validate_name, "models": _check_models},
    "aws": {"name": validate_name, "models": _check_models, "idle_minutes": _check_idle,
            "bucket": _aws_check("bucket"), "instance_type": _aws_check("instance_type"),
            "region": _aws_check("region")},
}


def field_errors(option: Option, values: dict[str, Any]) -> dict[str, str]:
    """Each invalid field's one-line message; empty when the form can be submitted."""
    errors: dict[str, str] = {}
    for name, check in CHECKS[option].items():
        try:
            check(values.get(name, ""))
        except BadInput as exc:
            errors[name] = str(exc)
    return errors
