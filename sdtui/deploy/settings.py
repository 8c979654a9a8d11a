"""Which deployment the user means, and what it is asked to be. Both front ends call this.

- Which: the name given (`--name`, the form's name); else the default deployment, the last one
  used (sdtui.recent), or the last one of the option given; else the option's own name.
- What: each field of the option's settings dataclass by the one precedence rule
  (sdtui.settings): flags or form > the deployment's ledger (or, once it is gone, the values
  last used) > the config file's section > the dataclass's defaults.

An option is one entry in OPTIONS: its settings dataclass, its config section, what to check
before use and how to build the deployment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sdtui import recent
from sdtui.config import load_config
from sdtui.deploy.base import Deployment
from sdtui.errors import BadInput
from sdtui.fetch.refs import is_remote
from sdtui.ledger import Ledger, damaged, validate_name
from sdtui.paths import state_dir_id
from sdtui.settings import Given, field_names, mistyped, resolve

ChosenBy = Literal["name", "option", "default", "first"]


@dataclass(frozen=True)
class OptionSpec:
    name: str
    title: str
    default_name: str
    settings_class: Callable[[], type]  # imported when needed (Docker SDK, boto3)
    # Fills in what the layers leave open; for_use: also every check that can run before
    # anything is created (status and teardown only need to find what exists).
    complete: Callable[[Any, bool], None]
    build: Callable[[Any, bool], Deployment]  # (settings, purge) -> the deployment
    # Fields that are never taken from what was used before: they apply to one run only.
    not_remembered: tuple[str, ...] = ()
    # Fills in defaults that follow from other fields (Option B's volume from the name).
    fill_in: Callable[[Any], None] = lambda settings: None


# --- Option B ------------------------------------------------------------------------------------


def _local_class() -> type:
    from sdtui.deploy.local_settings import LocalSettings

    return LocalSettings


def _local_fill_in(settings: Any) -> None:
    settings.fill_in()


def _local_complete(settings: Any, for_use: bool) -> None:
    settings.fill_in()
    if for_use:
        settings.validate()
    else:
        settings.validate_values()


def _local_build(settings: Any, purge: bool) -> Deployment:
    from sdtui.deploy.local import LocalDeployment

    return LocalDeployment(settings)


# --- Option A ------------------------------------------------------------------------------------

DEFAULT_REGION = "us-east-1"


def _aws_class() -> type:
    from sdtui.deploy.aws.settings import AwsSettings

    return AwsSettings


def _profile_region(profile: str | None) -> str | None:
    import boto3

    try:
        return boto3.session.Session(profile_name=profile).region_name
    except Exception:  # a missing profile is reported by the identity step
        return None


def _aws_complete(settings: Any, for_use: bool) -> None:
    from sdtui.deploy.aws.settings import resolve_region

    # Tests only: build another Dockerfile on the "instance" (e.g. Dockerfile.local).
    settings.dockerfile = os.environ.get("SDTUI_TEST_DOCKERFILE") or settings.dockerfile
    settings.region = settings.region or _profile_region(settings.profile) or DEFAULT_REGION
    settings.bucket = settings.bucket or ""
    if not for_use:
        settings.region = resolve_region(settings.region, settings.profile)
        return
    if not settings.bucket:
        raise BadInput("no S3 bucket given for the model files",
                       fix="pass --bucket NAME (a globally unique name) or set bucket in "
                       "the [aws] section of the config")
    settings.validate()


def _aws_build(settings: Any, purge: bool) -> Deployment:
    from sdtui.deploy.aws.deployment import AwsDeployment

    return AwsDeployment(settings, purge_bucket=purge)


# --- scale-out (AWS Batch) -----------------------------------------------------------------------


def _batch_class() -> type:
    from sdtui.deploy.batch.settings import BatchSettings

    return BatchSettings


def _batch_complete(settings: Any, for_use: bool) -> None:
    """Tests only: SDTUI_TEST_DOCKERFILE builds another Dockerfile, SDTUI_TEST_ECR_PUSH=0 tags
    the image with the ECR URI instead of pushing it (moto's ECR takes no push)."""
    settings.dockerfile = os.environ.get("SDTUI_TEST_DOCKERFILE") or settings.dockerfile
    settings.push = os.environ.get("SDTUI_TEST_ECR_PUSH") != "0"
    settings.region = settings.region or _profile_region(settings.profile) or DEFAULT_REGION
    settings.bucket = settings.bucket or ""
    settings.models = [str(m) for m in settings.models or []]  # files here, or bucket keys
    if for_use:
        settings.validate()
    else:
        settings.validate_target()


def _batch_build(settings: Any, purge: bool) -> Deployment:
    from sdtui.deploy.batch.deployment import BatchDeployment

    return BatchDeployment(settings, purge_bucket=purge)


OPTIONS: dict[str, OptionSpec] = {
    "local": OptionSpec("local", "Option B — local Docker", "local", _local_class,
                        _local_complete, _local_build, fill_in=_local_fill_in),
    "aws": OptionSpec("aws", "Option A — AWS GPU instance", "aws", _aws_class, _aws_complete,
                      _aws_build, not_remembered=("ami", "dockerfile")),
    "batch": OptionSpec("batch", "Scale-out — a prompt file over N GPUs (AWS Batch)", "batch",
                        _batch_class, _batch_complete, _batch_build,
                        not_remembered=("gpus", "dockerfile", "push")),
}


def option_spec(option: str) -> OptionSpec:
    try:
        return OPTIONS[option]
    except KeyError:
        raise BadInput(f"unknown deployment option {option!r}",
                       fix=f"use one of {', '.join(OPTIONS)}") from None


# --- which deployment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    option: str
    chosen_by: ChosenBy

    def describe(self) -> str:
        why = {"name": "as named",
               "option": f"the last {self.option} deployment used",
               "default": "the default: the last one used",
               "first": "none used yet"}[self.chosen_by]
        return f"deployment {self.name} ({self.option}), {why}"


def choose(given: Given) -> Target:
    """The deployment a command or form means."""
    last = recent.load()
    if given.option is not None:
        option_spec(given.option)
    if given.name:
        validate_name(given.name)
        ledger = Ledger.load(given.name)
        option = given.option or (ledger.option if ledger else None)
        if option is None:
            remembered = [o for o, n in last.last_of_option.items() if n == given.name]
            option = remembered[0] if remembered else "local"
        return Target(given.name, option, "name")
    if given.option is not None:
        if last.current and last.current[1] == given.option:
            return Target(last.current[0], given.option, "default")
        name = last.last_of_option.get(given.option)
        if name:
            return Target(name, given.option, "option")
        return Target(first_name(given.option), given.option, "first")
    if last.current:
        name, option = last.current
        if option in OPTIONS:
            return Target(name, option, "default")
    return Target(first_name("local"), "local", "first")


def first_name(option: str) -> str:
    """The name a first deployment of `option` gets: the option's own name with this machine's
    and state dir's id (paths.state_dir_id), so another state dir sharing the engine or the
    account never defaults to it. A deployment this state dir made under the bare name (before
    names carried the id) keeps it: its ledger still finds it for resume and teardown."""
    bare = OPTIONS[option].default_name
    ledger = Ledger.load(bare)
    if ledger is not None and ledger.option == option:
        return bare
    return f"{bare}-{state_dir_id()}"


# --- what it is asked to be ------------------------------------------------------------------


def layers(target: Target, given: Mapping[str, Any], cleared: Collection[str] = ()
           ) -> list[Mapping[str, Any]]:
    """The precedence layers of a deployment's settings, highest first. `cleared` fields skip
    the ledger's (or last used) layer."""
    spec = option_spec(target.option)
    cls = spec.settings_class()
    known = set(field_names(cls))
    ledger = Ledger.load(target.name)
    if ledger is not None and ledger.option == target.option:
        before = ledger.params
        if bad := mistyped(cls, before):
            raise damaged(ledger.path, f"params.{bad[0]} is {type(before[bad[0]]).__name__} "
                          f"{str(before[bad[0]])[:40]!r}")
    else:  # only a convenience: what does not fit is dropped
        remembered = recent.load().settings.get(target.option, {})
        before = {k: v for k, v in remembered.items() if k not in mistyped(cls, remembered)}
    before = {k: v for k, v in before.items()
              if k not in spec.not_remembered and k not in cleared}
    config_section = load_config().given(target.option)
    return [{k: v for k, v in layer.items() if k in known}
            for layer in (given, before, config_section)]


def unchecked_settings(target: Target, given: Mapping[str, Any],
                       cleared: Collection[str] = ()) -> Any:
    """The option's settings dataclass as the layers fill it in, before any check (what a form
    shows). Values that belong to another option are ignored."""
    found = layers(target, given, cleared)
    for layer in found:
        # The scale-out's are text (bucket keys too): a folder key keeps its trailing slash.
        if layer.get("models") and target.option != "batch":
            layer["models"] = [m if is_remote(m) else Path(m)  # type: ignore[index]
                               for m in layer["models"]]
    return resolve(option_spec(target.option).settings_class(), found, name=target.name)


def filled_settings(target: Target, given: Mapping[str, Any],
                    cleared: Collection[str] = ()) -> Any:
    """unchecked_settings with the defaults that follow from other fields filled in: what
    provisioning will use, before any check (what the live checks try)."""
    settings = unchecked_settings(target, given, cleared)
    option_spec(target.option).fill_in(settings)
    return settings


def resolve_settings(target: Target, given: Mapping[str, Any], *, for_use: bool,
                     cleared: Collection[str] = ()) -> Any:
    """The option's settings, filled in and checked: BadInput before anything is created."""
    settings = unchecked_settings(target, given, cleared)
    option_spec(target.option).complete(settings, for_use)
    return settings


def open_deployment(given: Given, *, for_use: bool, purge: bool = False,
                    target: Target | None = None) -> tuple[Target, Deployment]:
    """The deployment the user means (or `target`), ready to provision (for_use) or to
    inspect."""
    target = target or choose(given)
    settings = resolve_settings(target, given.deployment, for_use=for_use,
                                cleared=given.cleared)
    return target, option_spec(target.option).build(settings, purge)


def remember_use(deployment: Deployment) -> None:
    """This deployment is now the default one, and its settings are the last used, once it
    exists (its ledger records something): a run refused before it created anything (an
    unreachable engine, missing credentials) changes nothing that is remembered."""
    ledger = Ledger.load(deployment.name)
    if ledger is None or ledger.option != deployment.option or not ledger.resources():
        return
    spec = option_spec(deployment.option)
    recent.use_deployment(deployment.name, deployment.option)
    settings = getattr(deployment, "settings", None)
    if settings is not None:
        values = {k: v for k, v in asdict(settings).items()
                  if k != "name" and k not in spec.not_remembered}
        recent.remember_settings(deployment.option, values)
