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


def _args(option: Option, **flags: Any) -> argparse.Namespace:
    """The headless mode's flags, so the app builds a deployment exactly as `sdtui --no-ui`
    does (flags > ledger > config > defaults). An empty form field is no flag."""
    from sdtui.cli import build_parser

    args = build_parser().parse_args(["--option", option])
    for key, value in flags.items():
        setattr(args, key, value if value not in ("", None) else getattr(args, key))
    return args


def make_deployment(option: Option, values: dict[str, Any]) -> Deployment:
    """A deployment from a submitted form, validated before anything is created."""
    from sdtui.deploy.settings import deployment_from_args

    common = {"name": values.get("name"), "model": split_paths(values.get("models", ""))}
    if option == "aws":
        idle = str(values.get("idle_minutes") or "").strip()
        return deployment_from_args(_args(
            "aws", **common, profile=values.get("profile"), region=values.get("region"),
            bucket=values.get("bucket"), instance_type=values.get("instance_type"),
            spot=bool(values.get("spot")), idle_minutes=int(idle) if idle else None,
        ))
    return deployment_from_args(_args(
        "local", **common, volume=values.get("volume"), base_image=values.get("base_image"),
        docker_host=values.get("docker_host"),
    ))


def resume_deployment(ledger: Ledger) -> Deployment:
    """The deployment a ledger records, as it was last made (its status and teardown work
    even when its model files have moved since)."""
    from sdtui.deploy.settings import deployment_from_args

    return deployment_from_args(_args(ledger.option, name=ledger.name, status=True))


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
