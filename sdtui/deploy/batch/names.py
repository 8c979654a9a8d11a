"""Names of everything a scale-out deployment creates, derived from the deployment name alone
(like deploy/aws/naming.py, whose tag it shares), so status and teardown find the same things."""

from __future__ import annotations

import hashlib

# Shared with Option A (which makes the same ECR repository): defined once in aws/naming.py.
from sdtui.deploy.aws.naming import TAG_KEY as TAG_KEY
from sdtui.deploy.aws.naming import check_ours as check_ours
from sdtui.deploy.aws.naming import repository_name
from sdtui.deploy.aws.naming import tag_dict as tag_dict

repository = repository_name


def compute_environment(name: str) -> str:
    return f"sdtui-{name}"


def job_queue(name: str) -> str:
    return f"sdtui-{name}"


def job_definition(name: str) -> str:
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
