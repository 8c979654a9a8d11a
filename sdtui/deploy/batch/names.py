"""Names of everything a scale-out deployment creates, derived from the deployment name alone
(like deploy/aws/naming.py, whose tag it shares), so status and teardown find the same things."""

from __future__ import annotations

import hashlib

from sdtui.deploy.aws.naming import TAG_KEY
from sdtui.errors import BadInput


def tag_dict(name: str) -> dict[str, str]:
    """Batch and ECR take tags as a map (EC2 and IAM take a list: aws.naming.tags)."""
    return {TAG_KEY: name}


def check_ours(kind: str, resource: str, found_tags: dict[str, str] | None, name: str) -> None:
    """Refuse to touch a resource of our name that carries no tag of ours."""
    if (found_tags or {}).get(TAG_KEY) != name:
        raise BadInput(f"{kind} {resource} exists and is not sdtui's (no {TAG_KEY}={name} tag)",
                       fix="pass another --name, or remove that resource yourself")


def compute_environment(name: str) -> str:
    return f"sdtui-{name}"


def job_queue(name: str) -> str:
    return f"sdtui-{name}"


def job_definition(name: str) -> str:
    return f"sdtui-{name}"


def repository(name: str) -> str:
    return f"sdtui-{name}"


def job_role(name: str) -> str:
    return f"sdtui-{name}-job"


def run_role(name: str, run: str) -> str:
    """One run's role (IAM role names stop at 64 characters, so the run by a digest; its tag
    and description name it)."""
    return f"sdtui-{name}-run-{hashlib.sha256(run.encode()).hexdigest()[:8]}"


def run_role_path(name: str) -> str:
    """Every run role of a deployment lives under this IAM path, so iam:PassRole can name
    them all and nothing else."""
    return f"/sdtui/{name}/runs/"


def run_job_definition(name: str, run: str) -> str:
    return f"sdtui-{name}-{run}"


def instance_role(name: str) -> str:
    return f"sdtui-{name}-instance"


def instance_profile(name: str) -> str:
    return f"sdtui-{name}-instance"


def security_group(name: str) -> str:
    return f"sdtui-{name}-batch"


def launch_template(name: str) -> str:
    return f"sdtui-{name}-batch"


def job_name(name: str, run: str) -> str:
    return f"sdtui-{name}-{run}"


JOB_POLICY_NAME = "sdtui-read-model"
RUN_POLICY_NAME = "sdtui-read-model-and-run-write-run-outputs"
