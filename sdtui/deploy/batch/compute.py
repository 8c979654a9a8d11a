"""The managed compute environment: GPU instances of one type, on-demand or spot, from zero to
W of them (4 vCPUs each), on the ECS Amazon Linux 2023 NVIDIA image. It costs nothing while no
job runs: Batch scales it back to zero, so tearing it down is optional."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdtui.deploy.batch import names
from sdtui.deploy.batch.wait import Invalid, Status, disable_then_delete, wait_for
from sdtui.errors import DeploymentError

VCPUS_PER_GPU_JOB = 4  # every supported instance type is an xlarge: 4 vCPUs, 1 GPU
IMAGE_TYPE = "ECS_AL2023_NVIDIA"
SERVICE_LINKED_PATH = "/aws-service-role/batch.amazonaws.com/"
WHAT = "the compute environment"
# Changing any of these is an infrastructure update (botocore's Batch docs).
INFRASTRUCTURE = frozenset({"launchTemplate", "subnets", "securityGroupIds", "instanceRole"})
# Jobs running on the old instances finish (up to a shard's default attempt timeout).
UPDATE_POLICY = {"terminateJobsOnUpdate": False, "jobExecutionTimeoutMinutes": 360}
RECREATE_DELAYS_S = (30, 60)  # pauses before making an INVALID environment anew


def max_vcpus(shards: int) -> int:
    return VCPUS_PER_GPU_JOB * shards


def environment_params(name: str, *, instance_type: str, spot: bool, shards: int,
                       subnets: list[str], security_group: str, instance_profile_arn: str,
                       launch_template_id: str, launch_template_version: int,
                       service_role_arn: str) -> dict:
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
        # A version number, not $Latest: Batch reads $Latest only at an infrastructure
        # update, and a pinned number shows whether the environment has the newest one.
        "launchTemplate": {"launchTemplateId": launch_template_id,
                           "version": str(launch_template_version)},
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


def update_params(found: dict, params: dict) -> dict | None:
    """The UpdateComputeEnvironment request that brings `found` to `params`, or None. A new
    launch template version, other subnets, group or instance profile are an infrastructure
    update: Batch replaces the instances, and lets running jobs finish first."""
    current, wanted = found.get("computeResources", {}), params["computeResources"]
    changed = {key: wanted[key] for key in INFRASTRUCTURE
               if _comparable(current.get(key)) != _comparable(wanted[key])}
    if current.get("maxvCpus") != wanted["maxvCpus"]:
        changed["maxvCpus"] = wanted["maxvCpus"]
    if not changed and found.get("state") == "ENABLED":
        return None
    request = {"computeEnvironment": found["computeEnvironmentArn"], "state": "ENABLED"}
    if changed:
        request["computeResources"] = changed
    if INFRASTRUCTURE & changed.keys():
        request["updatePolicy"] = UPDATE_POLICY
    return request


def _comparable(value: object) -> object:
    if isinstance(value, list):
        return sorted(value)
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in {"launchTemplateId", "version"}}
    return value


def ensure(batch, name: str, params: dict, *, recorded: bool,
           on_create: Callable[[str], None] = lambda arn: None,
           sleep: Callable[[float], None] = time.sleep) -> str:
    """Create it, or bring the existing one to these settings; returns its ARN once VALID.
    What can change in place (the vCPU ceiling, the launch template, the network) is updated;
    the instance type and spot need a new environment: teardown first.

    One that goes INVALID (on a new account, mostly the roles made a moment ago not having
    reached Batch yet) is deleted and made again after a pause, when this ledger `recorded`
    creating it; `on_create` records each creation."""
    state = Status(describe, batch, name)
    found = describe(batch, name)
    if found is None:
        arn = _create(batch, params, on_create)
        recorded = True
    else:
        arn = found["computeEnvironmentArn"]
        _check_kind(found, params)
        if (wait_for(state, {"VALID", "INVALID"}, WHAT, failed=set(), sleep=sleep) == "VALID"
                and (update := update_params(found, params))):
            batch.update_compute_environment(**update)
    delays = list(RECREATE_DELAYS_S)
    while True:
        try:
            wait_for(state, {"VALID"}, WHAT, sleep=sleep)
            return arn
        except Invalid as exc:
            queued = recorded and bool(delays) and queue_uses(batch, name, arn)
            if not recorded or not delays or queued:
                raise _invalid(name, exc.reason, recorded, queued) from None
        sleep(delays.pop(0))
        delete(batch, name, sleep=sleep)
        arn = _create(batch, params, on_create)


def _create(batch, params: dict, on_create: Callable[[str], None]) -> str:
    arn = batch.create_compute_environment(**params)["computeEnvironmentArn"]
    on_create(arn)
    return arn


def queue_uses(batch, name: str, arn: str) -> bool:
    """Whether the deployment's job queue still points at it (Batch then refuses to delete
    it)."""
    found = batch.describe_job_queues(jobQueues=[names.job_queue(name)])["jobQueues"]
    return any(order.get("computeEnvironment") in {arn, names.compute_environment(name)}
               for queue in found for order in queue.get("computeEnvironmentOrder", []))


def _invalid(name: str, reason: str, recorded: bool, queue: bool = False) -> DeploymentError:
    environment = names.compute_environment(name)
    if not recorded:
        fix = ("it is not recorded as made by this machine, so sdtui leaves it alone: fix what "
               "the reason names, or delete it in the AWS Batch console, then run again")
    elif queue:
        fix = ("run sdtui --no-ui --option batch --teardown (its job queue still uses it), "
               "then run again")
    else:
        fix = ("fix what the reason names (new IAM roles can take minutes to reach Batch), "
               "then run again: sdtui makes the environment anew")
    return DeploymentError(f"compute environment {environment} is INVALID: "
                           f"{reason or 'Batch gives no reason'}", fix=fix)


def _check_kind(found: dict, params: dict) -> None:
    current, wanted = found.get("computeResources", {}), params["computeResources"]
    if (current.get("type"), current.get("instanceTypes")) != (
            wanted["type"], wanted["instanceTypes"]):
        raise DeploymentError(
            f"compute environment {found['computeEnvironmentName']} runs "
            f"{current.get('type')} {current.get('instanceTypes')}, not {wanted['type']} "
            f"{wanted['instanceTypes']}",
            fix="run sdtui --no-ui --option batch --teardown first (it costs nothing idle), "
            "or keep the earlier --instance-type and --spot")


def delete(batch, name: str, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Disable, then delete and wait until it is gone (Batch terminates its instances)."""
    found = describe(batch, name)
    if found is None:
        return False
    arn = found["computeEnvironmentArn"]
    disable_then_delete(
        Status(describe, batch, name), found, "the compute environment",
        disable=lambda: batch.update_compute_environment(computeEnvironment=arn,
                                                         state="DISABLED"),
        delete=lambda: batch.delete_compute_environment(computeEnvironment=arn), sleep=sleep)
    return True
