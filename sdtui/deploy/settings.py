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
        return _aws_deployment(args)
    if args.option == "batch":
        return _batch_deployment(args)
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


def _aws_deployment(args: argparse.Namespace) -> Deployment:
    """Option A: flags > the deployment's ledger > the config's [aws] section > defaults.
    SDTUI_TEST_DOCKERFILE (tests only) builds another Dockerfile, e.g. Dockerfile.local."""
    import os

    from sdtui.deploy.aws.deployment import DEFAULT_NAME, AwsDeployment
    from sdtui.deploy.aws.settings import DEFAULT_BASE_IMAGE, AwsSettings, resolve_region

    cfg = load_config().aws
    name = args.name or DEFAULT_NAME
    previous = Ledger.load(name)
    last = previous.params if previous else {}

    def pick(flag, key: str, default):  # noqa: ANN001, ANN202
        if flag is not None:
            return flag
        return last[key] if last.get(key) is not None else default

    settings = AwsSettings(
        name=name,
        region=pick(args.region, "region", cfg.region),
        bucket=pick(args.bucket, "bucket", cfg.bucket) or "",
        models=args.model or [Path(m) for m in last.get("models", [])] or list(cfg.models),
        profile=pick(args.profile, "profile", cfg.profile),
        instance_type=pick(args.instance_type, "instance_type", cfg.instance_type),
        spot=pick(args.spot, "spot", cfg.spot),
        idle_minutes=pick(args.idle_minutes, "idle_minutes", cfg.idle_minutes),
        ami=args.ami,
        ssh_cidr=args.ssh_cidr,
        base_image=pick(args.base_image, "base_image", DEFAULT_BASE_IMAGE),
        dockerfile=os.environ.get("SDTUI_TEST_DOCKERFILE") or "Dockerfile",
    )
    if args.status or args.teardown:
        settings.region = resolve_region(settings.region, settings.profile)
    else:
        if not settings.bucket:
            raise BadInput("no S3 bucket given for the model files",
                           fix="pass --bucket NAME (a globally unique name) or set bucket in "
                           "the [aws] section of the config")
        settings.validate()
    return AwsDeployment(settings, purge_bucket=args.purge_bucket)


def _batch_deployment(args: argparse.Namespace) -> Deployment:
    """Scale-out: flags > the deployment's ledger > the config's [aws] section (profile,
    region, bucket, models) > defaults. Test-only: SDTUI_TEST_DOCKERFILE builds another
    Dockerfile, SDTUI_TEST_ECR_PUSH=0 tags the image instead of pushing it."""
    import os

    from sdtui.deploy.aws.settings import DEFAULT_BASE_IMAGE
    from sdtui.deploy.batch.deployment import BatchDeployment
    from sdtui.deploy.batch.settings import DEFAULT_NAME, BatchSettings

    cfg = load_config().aws
    name = args.name or DEFAULT_NAME
    previous = Ledger.load(name)
    last = previous.params if previous else {}

    def pick(flag, key: str, default):  # noqa: ANN001, ANN202
        if flag is not None:
            return flag
        return last[key] if last.get(key) is not None else default

    settings = BatchSettings(
        name=name,
        region=pick(args.region, "region", cfg.region),
        bucket=pick(args.bucket, "bucket", cfg.bucket) or "",
        models=[str(m) for m in args.model] or list(last.get("models", []))
        or [str(m) for m in cfg.models],
        profile=pick(args.profile, "profile", cfg.profile),
        instance_type=pick(args.instance_type, "instance_type", "g4dn.xlarge"),
        spot=pick(args.spot, "spot", False),
        gpus=args.gpus if args.gpus is not None else 1,
        base_image=pick(args.base_image, "base_image", DEFAULT_BASE_IMAGE),
        dockerfile=os.environ.get("SDTUI_TEST_DOCKERFILE") or "Dockerfile",
        docker_host=args.docker_host,
        push=os.environ.get("SDTUI_TEST_ECR_PUSH") != "0",
    )
    if args.status or args.teardown or args.cancel:
        settings.validate_target()
    else:
        settings.validate()
    return BatchDeployment(settings, purge_bucket=args.purge_bucket)
