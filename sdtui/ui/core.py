"""What the app asks of the core, in one place, so tests can hand it a fake deployment.

No widget creates a deployment or talks to a worker directly: screens call these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui.config import Config, load_config
from sdtui.deploy.base import Deployment
from sdtui.errors import BadInput
from sdtui.ledger import Ledger, list_ledgers
from sdtui.paths import default_outputs_dir
from sdtui.ui.checks import Check, live_checks
from sdtui.ui.forms import Option, split_paths

AWS_NOT_YET = BadInput("cloud provisioning (Option A) is not available yet",
                       fix="choose Option B (local) for now")


def make_deployment(option: Option, values: dict[str, Any]) -> Deployment:
    """A deployment from a submitted form, validated before anything is created."""
    if option == "aws":
        from sdtui.deploy.aws.settings import AwsSettings

        AwsSettings(
            name=values["name"], region=values.get("region") or None, bucket=values["bucket"],
            models=split_paths(values["models"]), profile=values.get("profile") or None,
            instance_type=values["instance_type"], spot=bool(values.get("spot")),
            idle_minutes=int(values["idle_minutes"]),
        ).validate()
        raise AWS_NOT_YET
    from sdtui.deploy.local import LocalDeployment, LocalSettings

    settings = LocalSettings(
        models=split_paths(values["models"]), name=values["name"] or "local",
        volume=values.get("volume") or "sdtui-models",
        base_image=values.get("base_image") or "python:3.11-slim",
        docker_host=values.get("docker_host") or None,
    )
    settings.validate()
    return LocalDeployment(settings)


def resume_deployment(ledger: Ledger) -> Deployment:
    if ledger.option == "aws":
        raise AWS_NOT_YET
    from sdtui.deploy.local import LocalDeployment

    return LocalDeployment.from_ledger(ledger)


@dataclass
class Services:
    make_deployment: Callable[[Option, dict[str, Any]], Deployment] = make_deployment
    resume_deployment: Callable[[Ledger], Deployment] = resume_deployment
    list_deployments: Callable[[], list[Ledger]] = list_ledgers
    live_checks: Callable[[Option, dict[str, Any]], list[Check]] = live_checks
    load_config: Callable[[], Config] = load_config
    out_dir: Path | None = None
    # Form values to start from (the command line's flags), over config and ledger.
    initial: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> Path:
        return self.out_dir or self.load_config().generate.out_dir or default_outputs_dir()
