"""The scale-out's IAM policies, as pure builders (the README prints them; tests check their
scope and validate the calls that carry them). ARNs are written for the `aws` partition only,
the one `resolve_region` accepts.

- a run's role (what its shards may do): get the model's keys and that run's prompts, put under
  that run's out/, list under that run's prefix only;
- the deployment's job role (its base job definition's): get the model's keys only;
- the instance role: the ECS managed policy only;
- the caller's iam:PassRole: those roles only, and only to the services that use them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sdtui import bucket_layout
from sdtui.deploy.aws.settings import PARTITION
from sdtui.deploy.batch import names

ECS_INSTANCE_POLICY = "service-role/AmazonEC2ContainerServiceforEC2Role"
VERSION = "2012-10-17"
# Batch receives both roles (RegisterJobDefinition, CreateComputeEnvironment); the services
# that finally assume them are ECS tasks and EC2.
JOB_ROLE_SERVICES = ["batch.amazonaws.com", "ecs-tasks.amazonaws.com"]
INSTANCE_ROLE_SERVICES = ["batch.amazonaws.com", "ec2.amazonaws.com"]


def role_arn(account: str, role: str, path: str = "/") -> str:
    return f"arn:{PARTITION}:iam::{account}:role{path}{role}"


def ecs_instance_policy_arn() -> str:
    return f"arn:{PARTITION}:iam::aws:policy/{ECS_INSTANCE_POLICY}"


def bucket_arn(bucket: str, key: str | None = None) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}" + ("" if key is None else f"/{key}")


def job_trust_policy(account: str) -> dict:
    """ECS tasks of this account only may assume the job role."""
    return {"Version": VERSION, "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
    }]}


INSTANCE_TRUST_POLICY = {"Version": VERSION, "Statement": [{
    "Effect": "Allow",
    "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole",
}]}


def model_resources(bucket: str, keys: Iterable[str]) -> list[str]:
    """Object ARNs for the model files: a file by its key, a folder (a diffusers model, a
    checkpoint's S.config/) by everything under it."""
    found = []
    for key in keys:
        top, sep, _rest = key.partition("/")
        resource = bucket_arn(bucket, f"{top}/*" if sep else key)
        if resource not in found:
            found.append(resource)
    return sorted(found)


def _read_the_model(bucket: str, model_keys: Iterable[str]) -> dict:
    return {"Sid": "ReadTheModel", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": model_resources(bucket, model_keys)}


def job_role_policy(bucket: str, model_keys: Iterable[str]) -> dict:
    """The deployment's job role: the model and nothing of any run."""
    return {"Version": VERSION, "Statement": [_read_the_model(bucket, model_keys)]}


def run_role_policy(bucket: str, model_keys: Iterable[str], run: str) -> dict:
    """One run's role: the model, this run's prompts and outputs, nothing of another run."""
    prefix = bucket_layout.run_prefix(run)
    return {"Version": VERSION, "Statement": [
        _read_the_model(bucket, model_keys),
        {"Sid": "ReadThisRunsPrompts", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": bucket_arn(bucket, bucket_layout.prompts_key(run))},
        {"Sid": "WriteThisRunsOutputs", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": bucket_arn(bucket, f"{bucket_layout.out_prefix(run)}*")},
        {"Sid": "ListThisRunOnly", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": bucket_arn(bucket),
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
    ]}


def pass_role_policy(account: str, name: str) -> dict:
    """What the caller needs to hand the roles to Batch, and nothing more: the job role and
    each run's role (under the deployment's own path) to Batch for ECS tasks, the instance
    role to Batch for EC2."""
    def passing(resources: list[str], services: list[str]) -> dict:
        return {"Effect": "Allow", "Action": "iam:PassRole", "Resource": resources,
                "Condition": {"StringEquals": {"iam:PassedToService": services}}}

    return {"Version": VERSION, "Statement": [
        passing([role_arn(account, names.job_role(name)),
                 role_arn(account, "*", names.run_role_path(name))], JOB_ROLE_SERVICES),
        passing([role_arn(account, names.instance_role(name))], INSTANCE_ROLE_SERVICES),
    ]}


def document(policy: dict) -> str:
    return json.dumps(policy, separators=(",", ":"))
