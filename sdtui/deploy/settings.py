"""Which deployment the user means: command-line flags first, then what the deployment was
last made with (its ledger), then the config file, then defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdtui.config import load_config
from sdtui.deploy.base import Deployment
from sdtui.errors import BadInput
from sdtui.ledger import Ledger


def deployment_from_args(args: argparse.Namespace) -> Deployment:
    if args.option == "aws":
        raise BadInput("cloud provisioning (Option A) is not available yet",
                       fix="use --option local")
    from sdtui.deploy.local import DEFAULT_NAME, LocalDeployment, LocalSettings

    cfg = load_config().local
    name = args.name or DEFAULT_NAME
    previous = Ledger.load(name)
    last = previous.params if previous else {}
    models = args.model or [Path(m) for m in last.get("models", [])] or list(cfg.models)
    settings = LocalSettings(
        models=models,
        name=name,
        volume=args.volume or last.get("volume") or cfg.volume,
        base_image=args.base_image or last.get("base_image") or cfg.base_image,
        docker_host=args.docker_host or last.get("docker_host") or cfg.docker_host,
    )
    needs_model = not (args.status or args.teardown)
    if needs_model:
        settings.validate()
    return LocalDeployment(settings)
