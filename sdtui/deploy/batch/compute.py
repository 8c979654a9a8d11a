"""The managed compute environment: GPU instances of one type, on-demand or spot, from zero to
W of them (4 vCPUs each), on the ECS Amazon Linux 2023 NVIDIA image. It costs nothing while no
job runs: Batch scales it back to zero, so tearing it down is optional."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdtui.deploy.batch import launch_template, names
from sdtui.deploy.batch.wait import disable_then_delete, status_of, wait_for
from sdtui.errors import DeploymentError

VCPUS_PER_GPU_JOB = 4  # every supported instance type is an xlarge: 4 vCPUs, 1 GPU
IMAGE_TYPE = "ECS_AL2023_NVIDIA"
SERVICE_LINKED_PATH = "/aws-service-role/batch.amazonaws.com/"


def max_vcpus(shards: int) -> int:
    return VCPUS_PER_GPU_JOB * shards


def environment_params(name: str, *, instance_type: str, spot: bool, shards: int,
                       subnets: list[str], security_group: str, instance_profile_arn: str,
                       launch_template_id: str, service_role_arn: str) -> dict:
    """The CreateComputeEnvironment request."""
    resources = {
        "type": "SPOT" if spot else "EC2",
        "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED" if spot
        else "BEST_FIT_PROGRESSIVE",
        "minvCpus": 0,
        "maxvCpus": max_vcpus(shards),
        "instanceTypes": [instance_type],
        "subnets": subnets,
        "securityGroupIds": [security_group],
        "instanceRole": instance_profile_arn,
        "launchTemplate": {"launchTemplateId": launch_template_id,
                           "version": launch_template.VERSION},
        "ec2Configuration": [{"imageType": IMAGE_TYPE}],
        "tags": names.tag_dict(name),
    }
    return {"computeEnvironmentName": names.compute_environment(name), "type": "MANAGED",
            "state": "ENABLED", "computeResources": resources,
            "serviceRole": service_role_arn, "tags": names.tag_dict(name)}


def service_role_arn(iam) -> str:
    """Batch's service-linked role (made once per account, shared, never ours to delete)."""
    for page in iam.get_paginator("list_roles").paginate(PathPrefix=SERVICE_LINKED_PATH):
        for role in page["Roles"]:
            return role["Arn"]
    return iam.create_service_linked_role(AWSServiceName="batch.amazonaws.com")["Role"]["Arn"]


def describe(batch, name: str) -> dict | None:
    """Ours, or None; BadInput when one of that name exists without our tag."""
    found = batch.describe_compute_environments(
        computeEnvironments=[names.compute_environment(name)])["computeEnvironments"]
    if not found:
        return None
    names.check_ours("compute environment", found[0]["computeEnvironmentName"],
                     found[0].get("tags"), name)
    return found[0]


def ensure(batch, name: str, params: dict, *,
           sleep: Callable[[float], None] = time.sleep) -> str:
    """Create it, or bring the existing one to these settings; returns its ARN once VALID.
    What can change in place (the vCPU ceiling) is updated; anything else (instance type,
    spot) needs a new environment: teardown first."""
    state = status_of(describe, batch, name)
    found = describe(batch, name)
    if found is None:
        arn = batch.create_compute_environment(**params)["computeEnvironmentArn"]
    else:
        arn = found["computeEnvironmentArn"]
        current, wanted = found.get("computeResources", {}), params["computeResources"]
        if (current.get("type"), current.get("instanceTypes")) != (
                wanted["type"], wanted["instanceTypes"]):
            raise DeploymentError(
                f"compute environment {found['computeEnvironmentName']} runs "
                f"{current.get('type')} {current.get('instanceTypes')}, not {wanted['type']} "
                f"{wanted['instanceTypes']}",
                fix="run sdtui --no-ui --option batch --teardown first (it costs nothing idle), "
                "or keep the earlier --instance-type and --spot")
        if current.get("maxvCpus") != wanted["maxvCpus"] or found.get("state") != "ENABLED":
            wait_for(state, {"VALID"}, "the compute environment", sleep=sleep)
            batch.update_compute_environment(
                computeEnvironment=arn, state="ENABLED",
                computeResources={"maxvCpus": wanted["maxvCpus"]})
    wait_for(state, {"VALID"}, "the compute environment", sleep=sleep)
    return arn


def delete(batch, name: str, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Disable, then delete and wait until it is gone (Batch terminates its instances)."""
    found = describe(batch, name)
    if found is None:
        return False
    arn = found["computeEnvironmentArn"]
    disable_then_delete(
        status_of(describe, batch, name), found, "the compute environment",
        disable=lambda: batch.update_compute_environment(computeEnvironment=arn,
                                                         state="DISABLED"),
        delete=lambda: batch.delete_compute_environment(computeEnvironment=arn), sleep=sleep)
    return True
