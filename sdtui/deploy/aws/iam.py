"""The instance's role: trusted by EC2 only, allowed to read the model bucket and nothing else."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TypeVar

from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import (
    FETCH_POLICY_NAME,
    MODELS_PREFIX,
    POLICY_NAME,
    TAG_KEY,
    error_code,
    instance_profile_name,
    role_name,
)
from sdtui.deploy.aws.settings import PARTITION

T = TypeVar("T")

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def read_bucket_policy(bucket: str) -> dict:
    # s3fs lists the bucket as well as reading objects; the guide's policy forgot the list.
    bucket_arn = f"arn:{PARTITION}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn},
        ],
    }


def write_models_policy(bucket: str) -> dict:
    # A multipart upload's create, part and complete calls are all s3:PutObject; aborting one
    # is its own action. Reading (the skip check) is the role's read policy.
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                       "Resource": f"arn:{PARTITION}:s3:::{bucket}/{MODELS_PREFIX}*"}],
    }


@contextlib.contextmanager
def may_write_models(iam, name: str, bucket: str) -> Iterator[None]:
    """The instance role may write the bucket's models/ for the block's length only. A crash
    that leaves the policy behind is undone by ensure_role (nothing else) and refused by
    role_ready."""
    iam.put_role_policy(RoleName=role_name(name), PolicyName=FETCH_POLICY_NAME,
                        PolicyDocument=json.dumps(write_models_policy(bucket)))
    try:
        yield
    finally:
        _unless_missing(lambda: iam.delete_role_policy(RoleName=role_name(name),
                                                       PolicyName=FETCH_POLICY_NAME))


def _tags(name: str) -> list[dict[str, str]]:
    return [{"Key": TAG_KEY, "Value": name}]


def ensure_role(iam, name: str, bucket: str) -> tuple[str, str]:
    """Role, inline policy and instance profile (role attached); returns (role, profile)."""
    role = role_name(name)
    profile = instance_profile_name(name)
    ensure_role_named(iam, role, TRUST_POLICY, f"sdtui deployment {name}: read its model bucket",
                      _tags(name), inline={POLICY_NAME: read_bucket_policy(bucket)})
    ensure_instance_profile_named(iam, profile, role, _tags(name))
    return role, profile


def ensure_role_named(iam, role: str, trust: dict, description: str, tags: list[dict[str, str]],
                      *, inline: dict[str, dict] | None = None,
                      managed: list[str] | None = None, path: str = "/") -> str:
    """The role with exactly this trust, these inline policies and these managed policies
    ("nothing else": anything added by hand is dropped); returns its ARN."""
    try:
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust),
                              Description=description, Tags=tags, Path=path)["Role"]["Arn"]
    except ClientError as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(trust))
        iam.tag_role(RoleName=role, Tags=tags)
        arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    inline = inline or {}
    for policy_name, document in inline.items():
        iam.put_role_policy(RoleName=role, PolicyName=policy_name,
                            PolicyDocument=json.dumps(document))
    for other in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        if other not in inline:
            iam.delete_role_policy(RoleName=role, PolicyName=other)
    attached = {p["PolicyArn"] for page in iam.get_paginator("list_attached_role_policies")
                .paginate(RoleName=role) for p in page["AttachedPolicies"]}
    for policy_arn in set(managed or []) - attached:
        iam.attach_role_policy(RoleName=role, PolicyArn=policy_arn)
    for policy_arn in attached - set(managed or []):
        iam.detach_role_policy(RoleName=role, PolicyArn=policy_arn)
    return arn


def ensure_instance_profile_named(iam, profile: str, role: str, tags: list[dict[str, str]]
                                  ) -> str:
    """The instance profile carrying `role`; returns its ARN."""
    try:
        iam.create_instance_profile(InstanceProfileName=profile, Tags=tags)
    except ClientError as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
    found = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]
    if not any(r["RoleName"] == role for r in found["Roles"]):
        iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
    return found["Arn"]


def role_ready(iam, name: str, bucket: str) -> bool:
    """Describe-only: the profile carries the role, and the role has exactly our policy."""
    try:
        roles = iam.get_instance_profile(InstanceProfileName=instance_profile_name(name))[
            "InstanceProfile"
        ]["Roles"]
        policies = iam.list_role_policies(RoleName=role_name(name))["PolicyNames"]
        document = iam.get_role_policy(RoleName=role_name(name), PolicyName=POLICY_NAME)[
            "PolicyDocument"
        ]
    except ClientError:
        return False
    if isinstance(document, str):
        document = json.loads(document)
    return (
        [r["RoleName"] for r in roles] == [role_name(name)]
        and policies == [POLICY_NAME]
        and document == read_bucket_policy(bucket)
    )


def delete_instance_profile(iam, name: str) -> bool:
    """Detach the role and delete the profile; False when there was none."""
    return delete_instance_profile_named(iam, instance_profile_name(name))


def delete_instance_profile_named(iam, profile: str) -> bool:
    attached = _unless_missing(
        lambda: iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"])
    if attached is None:
        return False
    for r in attached:
        iam.remove_role_from_instance_profile(InstanceProfileName=profile, RoleName=r["RoleName"])
    iam.delete_instance_profile(InstanceProfileName=profile)
    return True


def delete_role(iam, name: str) -> bool:
    """The role's policies, then the role; False when there was none."""
    return delete_role_named(iam, role_name(name))


def role_tagged(iam, role: str, key: str, value: str) -> bool:
    """Whether the role exists and carries that tag (a label alone never proves ownership:
    callers check their ledger too)."""
    found = _unless_missing(lambda: iam.get_role(RoleName=role)["Role"])
    return found is not None and {t["Key"]: t["Value"] for t in found.get("Tags", [])}.get(
        key) == value


def delete_role_named(iam, role: str) -> bool:
    policies = _unless_missing(lambda: iam.list_role_policies(RoleName=role)["PolicyNames"])
    if policies is None:
        return False
    for policy in policies:
        iam.delete_role_policy(RoleName=role, PolicyName=policy)
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
        for policy in page["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=role, PolicyArn=policy["PolicyArn"])
    for extra in iam.list_instance_profiles_for_role(RoleName=role)["InstanceProfiles"]:
        iam.remove_role_from_instance_profile(
            InstanceProfileName=extra["InstanceProfileName"], RoleName=role
        )
    iam.delete_role(RoleName=role)
    return True


def _unless_missing(call: Callable[[], T]) -> T | None:
    """`call()`, or None when IAM answers that the entity does not exist."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise
