"""What the app asks of the core, in one place, so tests can hand it a fake deployment.

No widget creates a deployment or talks to a worker directly: screens call these. The forms
translate into the core's typed settings (sdtui.settings.Given) exactly as the command line
does, so the app and `--no-ui` resolve a deployment the same way and share the default one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui.client_locks import attached_elsewhere
from sdtui.config import Config, load_config
from sdtui.deploy.base import Deployment
from sdtui.ledger import Damaged, Ledger, damaged_ledgers, list_ledgers
from sdtui.paths import default_outputs_dir
from sdtui.settings import Given
from sdtui.ui.batch_form import batch_lines
from sdtui.ui.checks import Check, live_checks
from sdtui.ui.forms import Option, effective_values, from_form, to_form


def make_deployment(option: Option, values: dict[str, Any]) -> Deployment:
    """A deployment from a submitted form, validated before anything is created."""
    from sdtui.deploy.settings import open_deployment

    return open_deployment(from_form(option, values), for_use=True)[1]


def resume_deployment(ledger: Ledger) -> Deployment:
    """The deployment a ledger records, as it was last made (its status and teardown work
    even when its model files have moved since)."""
    from sdtui.deploy.settings import open_deployment

    return open_deployment(Given(option=ledger.option, name=ledger.name), for_use=False)[1]


def with_model(deployment: Deployment, model: str) -> Deployment:
    """The deployment made again with another model (a gallery image's pinned source), the rest
    as its ledger records it, as `--from-png` does; validated before anything is created."""
    from sdtui.deploy.settings import open_deployment

    given = Given(option=deployment.option, name=deployment.name,
                  deployment={"models": [model]})
    return open_deployment(given, for_use=True)[1]


def form_values(option: Option, given: Given) -> dict[str, Any]:
    """The option's form as the core resolves it: the flags the app was started with, then
    the deployment's ledger (or the values last used), then the config file, then defaults."""
    from sdtui.deploy.settings import choose, unchecked_settings

    mine = given.option in (None, option)
    target = choose(Given(option=option, name=given.name if mine else None))
    return to_form(option, unchecked_settings(target, given.deployment if mine else {}))


def default_option(given: Given) -> Option:
    """The option the chooser opens on: the one asked for, else the default deployment's."""
    from sdtui.deploy.settings import choose

    option = given.option or choose(given).option
    return option if option in ("aws", "batch") else "local"


def launch_price(values: dict[str, Any]) -> Any:
    """Option A: what AWS quotes now for the form's instance (a Price), or None."""
    from sdtui.deploy.aws.estimate import asked_price

    return asked_price(values.get("instance_type") or "g4dn.xlarge",
                       values.get("region") or None, spot=bool(values.get("spot")),
                       profile=values.get("profile") or None)


def remember_use(deployment: Deployment) -> None:
    from sdtui.deploy.settings import remember_use as remember

    remember(deployment)


@dataclass
class Services:
    make_deployment: Callable[[Option, dict[str, Any]], Deployment] = make_deployment
    resume_deployment: Callable[[Ledger], Deployment] = resume_deployment
    with_model: Callable[[Deployment, str], Deployment] = with_model
    list_deployments: Callable[[], list[Ledger]] = list_ledgers
    damaged_deployments: Callable[[], list[Damaged]] = damaged_ledgers
    live_checks: Callable[[Option, dict[str, Any]], list[Check]] = live_checks
    effective_values: Callable[[Option, dict[str, Any]], dict[str, Any]] = effective_values
    load_config: Callable[[], Config] = load_config
    form_values: Callable[[Option, Given], dict[str, Any]] = form_values
    default_option: Callable[[Given], Option] = default_option
    remember_use: Callable[[Deployment], None] = remember_use
    launch_price: Callable[[dict[str, Any]], Any] = launch_price
    batch_lines: Callable[[dict[str, Any]], list[dict[str, Any]]] = batch_lines
    # The other clients attached to a deployment (by name): what a teardown would cut off.
    other_clients: Callable[[str], list[str]] = attached_elsewhere
    out_dir: Path | None = None
    serve_port: int = 7860  # where the app's `sdtui serve` listens (A1111's port)
    # What the command line gave (flags), over the ledger, the last used values and config.
    given: Given = field(default_factory=Given)

    def outputs(self) -> Path:
        return self.out_dir or self.load_config().generate.out_dir or default_outputs_dir()
