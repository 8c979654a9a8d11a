"""Live readiness checks for the deployment screen: what is ready and what is not.

Each check is quick and never raises: it returns what it found. They run in a thread worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdtui.errors import SdtuiError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _models(values: dict[str, Any]) -> Check:
    from sdtui.ui.forms import _check_models

    try:
        _check_models(values.get("models", ""))
    except SdtuiError as exc:
        return Check("Model files readable", False, str(exc))
    return Check("Model files readable", True, values["models"])


def _docker(values: dict[str, Any]) -> list[Check]:
    from sdtui.container.docker_engine import connect_engine, has_nvidia_runtime

    try:
        engine = connect_engine(values.get("docker_host") or None)
        version = engine.version().get("Version", "?")
        gpu = has_nvidia_runtime(engine)
    except SdtuiError as exc:
        return [Check("Docker engine reachable", False, str(exc))]
    except Exception as exc:  # the engine answered the ping, then failed
        return [Check("Docker engine reachable", False, str(exc))]
    return [
        Check("Docker engine reachable", True, f"Docker {version}"),
        Check("GPU runtime present", gpu,
              "NVIDIA runtime" if gpu else "no NVIDIA runtime: the worker runs on the CPU"),
    ]


def _aws_identity(values: dict[str, Any]) -> Check:
    try:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=values.get("profile") or None,
                                        region_name=values.get("region") or None)
        quick = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1})
        who = session.client("sts", config=quick).get_caller_identity()
    except Exception as exc:
        return Check("AWS identity found", False, f"{type(exc).__name__}: {exc}"[:200])
    return Check("AWS identity found", True, who.get("Arn", "?"))


def _estimate(values: dict[str, Any]) -> Check:
    """The scale-out's cost and wall time for 1, 2, 4, 8 GPUs, from the form as it stands: the
    same read-only checks as a submission (bucket, model keys, quota), nothing created."""
    from sdtui.ui.batch_form import batch_estimate
    from sdtui.ui.forms import field_errors

    if field_errors("batch", values):
        return Check("Estimate", False, "complete the form to see the cost")
    try:
        lines = batch_estimate(values)
    except SdtuiError as exc:
        return Check("Estimate", False, str(exc))
    except Exception as exc:  # an AWS error the core did not expect: shown, not raised
        return Check("Estimate", False, f"{type(exc).__name__}: {exc}"[:200])
    return Check("Estimate", True, "\n" + "\n".join(lines))


def live_checks(option: str, values: dict[str, Any]) -> list[Check]:
    if option == "batch":
        return [_aws_identity(values), _estimate(values)]
    if option == "aws":
        return [_aws_identity(values), _models(values)]
    return [*_docker(values), _models(values)]
