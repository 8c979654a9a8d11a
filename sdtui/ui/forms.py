"""The deployment forms' fields, their defaults (config file, then the ledger) and their checks.

UI-free: the deployment screen renders these fields and shows each check's message next to
its field; the settings themselves come from the core (LocalSettings, AwsSettings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdtui.errors import BadInput
from sdtui.ledger import validate_name
from sdtui.modelfiles import detect_format
from sdtui.settings import Given

Option = Literal["local", "aws", "batch"]


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
    FormField("region", "Region", "the profile's region, or us-east-1"),
    FormField("bucket", "Bucket", "my-sd-models"),
    FormField("instance_type", "Instance type", "g4dn.xlarge"),
    FormField("spot", "Spot instance", kind="bool"),
    FormField("idle_minutes", "Idle auto-stop (minutes)", "30"),
)
BATCH_FIELDS = (
    FormField("name", "Deployment name", "batch"),
    FormField("prompt_file", "Prompt file (one prompt per line)", "~/prompts.txt"),
    FormField("models", "Model: a file here, or a key in the bucket", "sd-v1-4.ckpt"),
    FormField("bucket", "Bucket", "my-sd-models"),
    FormField("gpus", "GPUs (one shard each)", "4"),
    FormField("spot", "Spot instances", kind="bool"),
    FormField("instance_type", "Instance type", "g4dn.xlarge"),
    FormField("profile", "AWS profile", "default"),
    FormField("region", "Region", "the profile's region, or us-east-1"),
    FormField("steps", "Steps", "30"),
    FormField("width", "Width", "512"),
    FormField("height", "Height", "512"),
)
FIELDS: dict[Option, tuple[FormField, ...]] = {"local": LOCAL_FIELDS, "aws": AWS_FIELDS,
                                               "batch": BATCH_FIELDS}
# The scale-out form also carries the run: its prompt file and these generation settings.
GENERATE_FIELDS = ("steps", "width", "height")
RUN_FIELDS = ("prompt_file", *GENERATE_FIELDS)
INT_FIELDS = ("idle_minutes", "gpus", *GENERATE_FIELDS)


def split_paths(text: str) -> list[Path]:
    return [Path(p.strip()).expanduser() for p in text.split(",") if p.strip()]


def join_paths(paths: list[Any]) -> str:
    return ", ".join(str(p) for p in paths)


def to_form(option: Option, settings: Any) -> dict[str, Any]:
    """A settings dataclass as the form's values (text, or a bool for a checkbox)."""
    values: dict[str, Any] = {}
    for f in FIELDS[option]:
        value = getattr(settings, f.name, None)
        if f.kind == "bool":
            values[f.name] = bool(value)
        elif f.name == "models":
            values[f.name] = join_paths(value or [])
        else:
            values[f.name] = "" if value is None else str(value)
    return values


def from_form(option: Option, values: dict[str, Any]) -> Given:
    """The form as what the user gave (an empty field is not given: the lower layers decide).
    Call it once field_errors() is empty."""
    given: dict[str, Any] = {}
    generate: dict[str, Any] = {}
    for f in FIELDS[option]:
        value = values.get(f.name)
        if f.name in ("name", "prompt_file") or value is None or value == "":
            continue
        if f.name == "models":
            value = split_paths(value)
        elif f.name in INT_FIELDS:
            value = int(value)
        (generate if f.name in GENERATE_FIELDS else given)[f.name] = value
    return Given(option=option, name=values.get("name") or None, deployment=given,
                 generate=generate)


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
         "region": lambda v: v and aws.resolve_region(v, None)}[name](value)

    return check


def _check_batch_models(text: str) -> None:
    from sdtui.deploy.batch.models import is_local

    if not text.strip():
        raise BadInput("no model given",
                       fix="enter a file here, or a key in the bucket (e.g. sd-v1-4.ckpt)")
    if is_local(text.split(",")[0].strip()):
        _check_models(text)


def _batch_check(name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        from sdtui.deploy.batch import settings as batch
        from sdtui.inputs import read_prompt_file

        if name == "prompt_file":
            if not value:
                raise BadInput("no prompt file given",
                               fix="enter a file with one prompt per line")
            read_prompt_file(Path(value))
        elif name == "gpus":
            batch.check_gpus(_integer(value or "1", "GPUs", "4"))
        elif name == "instance_type" and value and value not in batch.INSTANCE_TYPES:
            raise BadInput(f"{value!r} cannot run one shard per GPU",
                           fix=f"enter one of {', '.join(batch.INSTANCE_TYPES)}")

    return check


def _integer(text: str, what: str, example: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"{text!r} is not a number of {what}", fix=f"enter e.g. {example}") from None


def _generate_check(name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        from sdtui import protocol

        if value:
            try:
                protocol.GENERATE_FIELDS[name].check(name, _integer(value, name, "512"))
            except protocol.ProtocolError as exc:
                raise BadInput(str(exc), fix="see sdtui --help for valid values") from None

    return check


CHECKS: dict[Option, dict[str, Callable[[str], None]]] = {
    "local": {"name": validate_name, "models": _check_models},
    "aws": {"name": validate_name, "models": _check_models, "idle_minutes": _check_idle,
            "bucket": _aws_check("bucket"), "instance_type": _aws_check("instance_type"),
            "region": _aws_check("region")},
    "batch": {"name": validate_name, "prompt_file": _batch_check("prompt_file"),
              "models": _check_batch_models, "bucket": _aws_check("bucket"),
              "gpus": _batch_check("gpus"), "instance_type": _batch_check("instance_type"),
              "region": _aws_check("region"),
              **{name: _generate_check(name) for name in GENERATE_FIELDS}},
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
