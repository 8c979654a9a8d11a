"""Live readiness checks for the deployment screen: what is ready, what only works slowly, and
what stops a deployment.

Each check is quick and never raises: it returns what it found. They run in a thread worker.
Errors carry the same fix line the provisioning screen would give (in the app's words).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sdtui.errors import SdtuiError
from sdtui.ui.fixes import error_text

State = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str

    @property
    def ok(self) -> bool:
        return self.state != "fail"


def model_check(option: str, values: dict[str, Any]) -> Check:
    from sdtui.ui.forms import field_error, field_note

    error = field_error(option, "models", values.get("models", ""), values)  # type: ignore[arg-type]
    if error is not None:
        return Check("Model files readable", "fail", error_text(error))
    if note := field_note(option, "models", values):  # type: ignore[arg-type]
        return Check("Model files readable", "warn", note)
    return Check("Model files readable", "ok", values["models"])


def _docker(values: dict[str, Any]) -> list[Check]:
    from sdtui.container.docker_engine import connect_engine, has_nvidia_runtime

    try:
        engine = connect_engine(values.get("docker_host") or None)
        version = engine.version().get("Version", "?")
        gpu = has_nvidia_runtime(engine)
    except SdtuiError as exc:
        return [Check("Docker engine reachable", "fail", error_text(exc))]
    except Exception as exc:  # the engine answered the ping, then failed
        return [Check("Docker engine reachable", "fail", str(exc))]
    if gpu:
        runtime = Check("GPU runtime", "ok", "NVIDIA runtime: images in seconds")
    else:
        runtime = Check("GPU runtime", "warn", "none: the worker runs on the CPU, and each "
                        "512×512 image takes minutes instead of seconds")
    return [Check("Docker engine reachable", "ok", f"Docker {version}"), runtime,
            _base_image(engine, values.get("base_image") or "")]


def _base_image(engine: Any, name: str) -> Check:
    """The image the worker is built on: here, or pullable, before the volume is created."""
    from sdtui.container.build import base_image_source

    if not name:
        return Check("Base image", "fail", "enter one in “Base image”")
    try:
        sure, detail = base_image_source(engine, name)
    except SdtuiError as exc:
        return Check("Base image", "fail", error_text(exc))
    except Exception as exc:  # the engine failed to answer: the build would find out
        return Check("Base image", "warn", f"could not ask the engine: {exc}"[:200])
    return Check("Base image", "ok" if sure else "warn", detail)


def _aws_identity(values: dict[str, Any]) -> Check:
    """The provisioning screen's own identity step, so the fix line is the same."""
    from sdtui.deploy.aws.session import identity, make_session

    try:
        who = identity(make_session(values.get("profile") or None,
                                    values.get("region") or "us-east-1"))
    except SdtuiError as exc:
        return Check("AWS identity found", "fail", error_text(exc))
    except Exception as exc:  # botocore can fail in ways the step reports as a failed step
        return Check("AWS identity found", "fail", f"{type(exc).__name__}: {exc}"[:200])
    return Check("AWS identity found", "ok", who.arn)


def _estimate(values: dict[str, Any]) -> Check:
    """The scale-out's cost and wall time for 1, 2, 4, 8 GPUs, from the form as it stands: the
    same read-only checks as a submission (bucket, model keys, quota), nothing created."""
    from sdtui.ui.batch_form import batch_estimate
    from sdtui.ui.forms import field_errors

    if field_errors("batch", values):
        return Check("Estimate", "warn", "complete the form to see the cost")
    try:
        lines = batch_estimate(values)
    except SdtuiError as exc:
        return Check("Estimate", "fail", error_text(exc))
    except Exception as exc:  # an AWS error the core did not expect: shown, not raised
        return Check("Estimate", "fail", f"{type(exc).__name__}: {exc}"[:200])
    return Check("Estimate", "ok", "\n" + "\n".join(lines))


def live_checks(option: str, values: dict[str, Any]) -> list[Check]:
    if option == "batch":
        return [_aws_identity(values), _estimate(values)]
    if option == "aws":
        return [_aws_identity(values), model_check(option, values)]
    return [*_docker(values), model_check(option, values)]
