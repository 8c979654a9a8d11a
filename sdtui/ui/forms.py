"""The deployment forms' fields, their help, their translation to and from the core's typed
settings, and their checks.

UI-free: the deployment screen renders these fields and shows each check's message under its
field; the settings themselves, and which value wins, come from the core (deploy/settings).
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

Option = Literal["local", "aws"]


@dataclass(frozen=True)
class FormField:
    name: str  # the settings field it fills in
    label: str
    placeholder: str = ""
    kind: Literal["text", "bool"] = "text"
    help: str = ""  # one line: the field's tooltip and its line in the help screen


_NAME_HELP = ("What sdtui calls this deployment: lowercase letters, digits and hyphens. "
              "Another name makes a second deployment beside this one.")
_MODELS_HELP = ("The Stable Diffusion model (.ckpt, .safetensors or a diffusers folder), then "
                "any extra files, comma-separated (e.g. GFPGANv1.3.pth for face restoration).")
_BASE_IMAGE_HELP = ("The image the worker image is built on; it must be on this Docker engine "
                    "or pullable (sdtui-base:offline on machines without Docker Hub).")

LOCAL_FIELDS = (
    FormField("name", "Deployment name", "local", help=_NAME_HELP),
    FormField("models", "Model files", "~/Downloads/sd-v1-4.ckpt, GFPGANv1.3.pth",
              help=_MODELS_HELP),
    FormField("docker_host", "Docker host/context", "default: DOCKER_HOST or the context",
              help="Which Docker engine runs the worker: empty for this machine's (DOCKER_HOST "
              "or the current context), or e.g. ssh://user@gpu-box."),
    FormField("volume", "Volume", "sdtui-models",
              help="The Docker volume the model files are copied into, once; it is kept on "
              "teardown unless you tick “Also delete the model volume”."),
    FormField("base_image", "Base image", "python:3.11-slim", help=_BASE_IMAGE_HELP),
)
AWS_FIELDS = (
    FormField("name", "Deployment name", "aws", help=_NAME_HELP),
    FormField("models", "Model files", "~/Downloads/sd-v1-4.ckpt", help=_MODELS_HELP),
    FormField("profile", "AWS profile", "default",
              help="The profile in ~/.aws/config to use; empty for the standard credential "
              "chain (environment variables, default profile, SSO)."),
    FormField("region", "Region", "the profile's region, or us-east-1",
              help="The AWS region of the instance and the bucket, e.g. us-east-1."),
    FormField("bucket", "Bucket", "my-sd-models",
              help="A private S3 bucket for the model files: a globally unique name. It is "
              "created if missing and kept on teardown unless you choose to delete it."),
    FormField("instance_type", "Instance type", "g4dn.xlarge",
              help="The NVIDIA GPU instance: g4dn.xlarge (one T4, 16 GB) is the cheapest "
              "that runs Stable Diffusion well."),
    FormField("spot", "Spot instance", kind="bool",
              help="A spot instance costs about a third, but AWS may take it back at any "
              "time; the finished images are kept."),
    FormField("idle_minutes", "Idle auto-stop (minutes)", "30",
              help="The instance stops itself after this many minutes without a request, so "
              "a forgotten GPU does not keep costing money."),
)
FIELDS: dict[Option, tuple[FormField, ...]] = {"local": LOCAL_FIELDS, "aws": AWS_FIELDS}


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
    for f in FIELDS[option]:
        value = values.get(f.name)
        if f.name == "name" or value is None or value == "":
            continue
        if f.name == "models":
            value = split_paths(value)
        elif f.name == "idle_minutes":
            value = int(value)
        given[f.name] = value
    return Given(option=option, name=values.get("name") or None, deployment=given)


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


CHECKS: dict[Option, dict[str, Callable[[str], None]]] = {
    "local": {"name": validate_name, "models": _check_models},
    "aws": {"name": validate_name, "models": _check_models, "idle_minutes": _check_idle,
            "bucket": _aws_check("bucket"), "instance_type": _aws_check("instance_type"),
            "region": _aws_check("region")},
}


def field_errors(option: Option, values: dict[str, Any]) -> dict[str, BadInput]:
    """Each invalid field's error; empty when the form can be submitted."""
    errors: dict[str, BadInput] = {}
    for name, check in CHECKS[option].items():
        try:
            check(values.get(name, ""))
        except BadInput as exc:
            errors[name] = exc
    return errors
