"""Names of everything a scale-out deployment creates, derived from the deployment name alone
(like deploy/aws/naming.py, whose tag it shares), so status and teardown find the same things."""

from __future__ import annotations

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


JOB_POLICY_NAME = "sdtui-read-model-write-runs"
