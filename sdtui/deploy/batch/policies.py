"""The scale-out's IAM policies, as pure builders (the README prints them; tests check their
scope and validate the calls that carry them):

- the job role (what a shard may do): get the model's keys and any run's prompts, put under a
  run's out/, list under runs/ only;
- the instance role: the ECS managed policy only;
- the caller's iam:PassRole: those two roles only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sdtui import bucket_layout
from sdtui.deploy.batch import names

ECS_INSTANCE_POLICY = "service-role/AmazonEC2ContainerServiceforEC2Role"
VERSION = "2012-10-17"


def partition_of(arn: str) -> str:
    """'aws', 'aws-cn' or 'aws-us-gov', from any ARN (the caller's identity, say)."""
    return arn.split(":")[1]


def role_arn(partition: str, account: str, role: str) -> str:
    return f"arn:{partition}:iam::{account}:role/{role}"


def ecs_instance_policy_arn(partition: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{ECS_INSTANCE_POLICY}"


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


def model_resources(partition: str, bucket: str, keys: Iterable[str]) -> list[str]:
    """Object ARNs for the model files: a file by its key, a folder (a diffusers model, a
    checkpoint's S.config/) by everything under it."""
    found = []
    for key in keys:
        top, sep, _rest = key.partition("/")
        resource = f"arn:{partition}:s3:::{bucket}/{top}/*" if sep else \
            f"arn:{partition}:s3:::{bucket}/{key}"
        if resource not in found:
            found.append(resource)
    return sorted(found)


def job_role_policy(partition: str, bucket: str, model_keys: Iterable[str]) -> dict:
    runs = f"arn:{partition}:s3:::{bucket}/{bucket_layout.RUNS_PREFIX}*"
    return {"Version": VERSION, "Statement": [
        {"Sid": "ReadTheModel", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": model_resources(partition, bucket, model_keys)},
        {"Sid": "ReadRunPrompts", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{runs}/prompts.jsonl"},
        {"Sid": "WriteRunOutputs", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"{runs}/out/*"},
        {"Sid": "ListRunsOnly", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:{partition}:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [f"{bucket_layout.RUNS_PREFIX}*"]}}},
    ]}


def pass_role_policy(partition: str, account: str, name: str) -> dict:
    """What the caller needs to hand the two roles to Batch and EC2, and nothing more."""
    return {"Version": VERSION, "Statement": [{
        "Effect": "Allow", "Action": "iam:PassRole",
        "Resource": [role_arn(partition, account, names.job_role(name)),
                     role_arn(partition, account, names.instance_role(name))],
    }]}


def document(policy: dict) -> str:
    return json.dumps(policy, separators=(",", ":"))
