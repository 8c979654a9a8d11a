from __future__ import annotations

from pathlib import Path

from sdtui.deploy.aws.settings import AwsSettings
from sdtui.deploy.base import run_steps

CIDR = "203.0.113.7/32"


def settings(model: Path, **overrides) -> AwsSettings:
    values = dict(name="t1", region="us-east-1", bucket="sdtui-test-models", models=[model],
                  ssh_cidr=CIDR)
    values.update(overrides)
    return AwsSettings(**values)


def no_public_ip() -> str:
    raise AssertionError("tests pass ssh_cidr; the public IP must not be looked up")


def run(steps) -> list:
    events: list = []
    run_steps(steps, events.append)
    return events


def outcomes(events) -> dict[str, str]:
    return {e.step: e.outcome for e in events if type(e).__name__ == "StepFinished"}
