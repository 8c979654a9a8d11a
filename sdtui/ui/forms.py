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
from sdtui.fetch.refs import is_remote, parse_ref
from sdtui.ledger import validate_name
from sdtui.modelfiles import detect_format
from sdtui.settings import Given
from sdtui.userfiles import check_file, expand

Option = Literal["local", "aws", "batch"]


@dataclass(frozen=True)
class FormField:
    name: str  # the settings field it fills in
    label: str
    placeholder: str = ""
    kind: Literal["text", "bool"] = "text"
    help: str = ""  # one line: the field's tooltip and its line in the help screen


_NAME_HELP = ("What sdtui calls this deployment: lowercase letters, digits and hyphens. "
              "Another name makes a second deployment beside this one.")
_MODELS_HELP = ("The model (.ckpt, .safetensors, .gguf with its set's parts beside it, a "
                "diffusers or parts folder, or a name to fetch: sd15, hf:ORG/REPO, "
                "civitai:ID), then extras, comma-separated (GFPGANv1.3.pth).")
_BASE_IMAGE_HELP = ("The image the worker image is built on; it must be on this Docker engine "
                    "or pullable (sdtui-base:offline on machines without Docker Hub).")

LOCAL_FIELDS = (
    FormField("name", "Deployment name", "local", help=_NAME_HELP),
    FormField("models", "Model files", "~/Downloads/sd-v1-4.ckpt, GFPGANv1.3.pth",
              help=_MODELS_HELP),
    FormField("docker_host", "Docker host/context", "default: DOCKER_HOST or the context",
              help="Which Docker engine runs the worker: empty for this machine's (DOCKER_HOST "
              "or the current context), or e.g. ssh://user@gpu-box."),
    FormField("volume", "Volume", "default: sdtui-NAME-models (NAME: the deployment's)",
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
    FormField("region", "Region", "profile's, or us-east-1",
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
_AWS = {f.name: f for f in AWS_FIELDS}
BATCH_FIELDS = (
    FormField("name", "Deployment name", "batch", help=_NAME_HELP),
    FormField("prompt_file", "Prompt file (one prompt per line)", "~/prompts.txt",
              help="A text file with one prompt per line (blank lines and # comments are "
              "skipped); each line is one image, shared out over the GPUs."),
    FormField("models", "Model: a file here, or a key in the bucket", "sd-v1-4.ckpt",
              help="The model file here (uploaded to the bucket once), or the key of one "
              "already in the bucket."),
    FormField("bucket", "Bucket", "my-sd-models",
              help="The private S3 bucket with the model and, afterwards, the run's images "
              "(Option A's bucket works); created if missing."),
    FormField("gpus", "GPUs (one shard each)", "4",
              help="How many GPU instances share the prompt file; each is billed only while "
              "it works. The checks panel shows the estimate for 1, 2, 4 and 8."),
    FormField("spot", "Spot instances", kind="bool",
              help="Spot instances cost about a third; a shard AWS takes back is retried and "
              "the images it finished are kept."),
    FormField("instance_type", "Instance type", "g4dn.xlarge",
              help="One GPU per instance: g4dn.xlarge (T4), g5.xlarge (A10G), g6.xlarge (L4) "
              "or g6e.xlarge (L40S)."),
    _AWS["profile"],
    _AWS["region"],
    FormField("steps", "Steps", "30", help="Sampling steps for every image, 1–150."),
    FormField("width", "Width", "model's", help="Image width in pixels: a multiple of 8, "
              "64–2048; empty: the model's own (512 for SD 1.x, 1024 for SDXL)."),
    FormField("height", "Height", "model's",
              help="Image height in pixels: a multiple of 8, 64–2048; empty: the model's own."),
)
_BATCH = {f.name: f for f in BATCH_FIELDS}
FIELDS: dict[Option, tuple[FormField, ...]] = {"local": LOCAL_FIELDS, "aws": AWS_FIELDS,
                                               "batch": BATCH_FIELDS}
# The scale-out form also carries the run: its prompt file and these generation settings.
GENERATE_FIELDS = ("steps", "width", "height")
RUN_FIELDS = ("prompt_file", *GENERATE_FIELDS)
INT_FIELDS = ("idle_minutes", "gpus", *GENERATE_FIELDS)


def split_paths(text: str) -> list[Path | str]:
    """Comma-separated models: paths, and names to fetch kept as typed (hf:, civitai:, URLs,
    catalogue names)."""
    return [p.strip() if is_remote(p.strip()) else expand(p.strip(), "model file")
            for p in text.split(",") if p.strip()]


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
    cleared: set[str] = set()
    for f in FIELDS[option]:
        value = values.get(f.name)
        if f.name in ("name", "prompt_file"):
            continue
        if value is None or value == "":
            if f.name not in GENERATE_FIELDS:
                cleared.add(f.name)
            continue
        if f.name == "models":
            value = split_paths(value)
        elif f.name in INT_FIELDS:
            value = int(value)
        (generate if f.name in GENERATE_FIELDS else given)[f.name] = value
    return Given(option=option, name=values.get("name") or None, deployment=given,
                 generate=generate, cleared=frozenset(cleared))


def effective_values(option: Option, values: dict[str, Any]) -> dict[str, Any]:
    """The form as provisioning will read it: an empty field is the default (the config file's,
    else the built-in one), never the value the ledger or the last use holds. The checks run on
    these, so they check what Provision will use."""
    from sdtui.deploy.settings import choose, filled_settings
    from sdtui.errors import SdtuiError

    try:
        given = from_form(option, values)
        settings = filled_settings(choose(given), given.deployment, given.cleared)
    except (SdtuiError, ValueError):  # a field marked ✗: the checks see the form as typed
        return dict(values)
    resolved = to_form(option, settings)
    return {**values, **{k: v for k, v in resolved.items() if k not in ("name", *RUN_FIELDS)}}


# --- per-field checks: each raises BadInput with the one-line message shown next to the field


def _check_models(text: str) -> None:
    paths = split_paths(text)
    if not paths:
        raise BadInput("no model given", fix="enter sd15 (fetched by name), hf:ORG/REPO, "
                       "civitai:ID or the path of a .ckpt, .safetensors, .gguf or folder")
    if isinstance(paths[0], str):
        parse_ref(paths[0])  # the name's form; provisioning resolves it (Option B)
    else:
        detect_format(paths[0])
    for extra in paths[1:]:
        if isinstance(extra, str):
            raise BadInput(f"model file {extra} does not exist", fix="check the path")
        check_file(extra, "model file")


def _check_idle(text: str) -> None:
    if not text:
        return  # the default
    try:
        minutes = int(text)
    except ValueError:
        raise BadInput(f"{text!r} is not a number of minutes", fix="enter e.g. 30") from None
    if minutes < 1:
        raise BadInput("idle minutes must be 1 or more", fix="enter e.g. 30")


def _aws_check(name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        from sdtui.deploy.aws import settings as aws

        if name == "bucket" and not value:
            raise BadInput("Enter a bucket name", fix="3–63 lowercase letters, digits, hyphens "
                           "and dots, globally unique (e.g. my-sd-models-1234)")
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
            batch.check_gpus(_integer(value or "1", "GPUs", "4"), field=f"“{_BATCH['gpus'].label}”")
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


# Where a deployment keeps the copy of its model that serves once the file here is gone.
KEPT_IN = {"local": "volume", "aws": "bucket"}


def kept_model(option: Option, values: dict[str, Any]) -> str | None:
    """The form's model file when it is gone from this machine yet the deployment the form
    names keeps the copy that serves it (the very rule --no-ui validates with: the settings'
    model_kept), else None."""
    from sdtui.deploy.settings import choose, filled_settings
    from sdtui.errors import SdtuiError

    if option not in KEPT_IN:
        return None
    try:
        given = from_form(option, values)
        settings = filled_settings(choose(given), given.deployment, given.cleared)
        return str(settings.models[0]) if settings.model_kept() else None
    except (SdtuiError, ValueError):  # a field marked ✗ for its own reason
        return None


def field_note(option: Option, name: str, values: dict[str, Any]) -> str | None:
    """A warning under a field that passes, or None."""
    from sdtui.deploy.kept_model import kept_note

    if name == "models" and (model := kept_model(option, values)):
        return kept_note(model, KEPT_IN[option])
    return None


def field_error(option: Option, name: str, value: str,
                values: dict[str, Any] | None = None) -> BadInput | None:
    """The field's error, or None when it is fine (or has no check). `values`: the whole form,
    for a check that depends on other fields (a model kept by the deployment named)."""
    check = CHECKS[option].get(name)
    try:
        if check is not None:
            check(value)
    except BadInput as exc:
        if values is not None and field_note(option, name, {**values, name: value}):
            return None
        return exc
    return None


def field_errors(option: Option, values: dict[str, Any]) -> dict[str, BadInput]:
    """Each invalid field's error; empty when the form can be submitted."""
    found = {name: field_error(option, name, values.get(name, ""), values)
             for name in CHECKS[option]}
    return {name: error for name, error in found.items() if error is not None}
