"""What the app asks of the core, in one place, so tests can hand it a fake deployment.

No widget creates a deployment or talks to a worker directly: screens call these.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui.config import Config, load_config
from sdtui.deploy.base import Deployment
from sdtui.ledger import Ledger, list_ledgers
from sdtui.paths import default_outputs_dir
from sdtui.ui.checks import Check, live_checks
from sdtui.ui.forms import Option, split_paths


def _aws_args(**flags: Any) -> argparse.Namespace:
    """The headless mode's flags for Option A, so the app builds the deployment exactly as
    `sdtui --no-ui --option aws` does (flags > ledger > config > defaults)."""
    from sdtui.cli import build_parser

    args = build_parser().parse_args(["--option", "aws"])
    for key, value in flags.items():
        setattr(args, key, value)
    return args


def make_deployment(option: Option, values: dict[str, Any]) -> Deployment:
    """A deployment from a submitted form, validated before anything is created."""
    if option == "aws":
        from sdtui.deploy.settings import deployment_from_args

        idle = str(values.get("idle_minutes") or "").strip()
        return deployment_from_args(_aws_args(
            name=values.get("name") or None, model=split_paths(values.get("models", "")),
            profile=values.get("profile") or None, region=values.get("region") or None,
            bucket=values.get("bucket") or None,
            instance_type=values.get("instance_type") or None, spot=bool(values.get("spot")),
            idle_minutes=int(idle) if idle else None,
        ))
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
    """The deployment a ledger records, as it was last made (its status and teardown work
    even when its model files have moved since)."""
    if ledger.option == "aws":
        from sdtui.deploy.settings import deployment_from_args

        return deployment_from_args(_aws_args(name=ledger.name, status=True))
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
