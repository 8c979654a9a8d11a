"""The GPU instance: found by tag before anything is launched, launched with IMDSv2 and an
encrypted root volume, waited for within bounds, and its launch errors told apart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from sdtui.deploy.aws.naming import error_code, error_message, tag_filter, tags
from sdtui.errors import DeploymentError

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
SPOT_TERMINATION = "Server.SpotInstanceTermination"
PROFILE_RETRY_DELAYS = (2, 4, 8, 15, 15, 15)  # IAM profiles take seconds to propagate to EC2
RUNNING_WAIT = {"Delay": 5, "MaxAttempts": 60}  # at most 5 minutes
STOPPED_WAIT = {"Delay": 5, "MaxAttempts": 60}


@dataclass(frozen=True)
class Quota:
    on_demand: tuple[str, str]
    spot: tuple[str, str]


G_AND_VT = Quota(
    ("Running On-Demand G and VT instances", "L-DB2E81BA"),
    ("All G and VT Spot Instance Requests", "L-3819A6DF"),
)
P_FAMILY = Quota(
    ("Running On-Demand P instances", "L-417A185B"),
    ("All P Spot Instance Requests", "L-7212CCBC"),
)


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    instance_type: str
    image_id: str
    root_device_name: str
    volume_gb: int
    instance_profile: str
    key_name: str
    security_group_id: str
    spot: bool = False
    user_data: str = ""  # cloud-init: the deployment's SSH host key (see ssh.py)


def launch_request(spec: LaunchSpec, subnet_id: str) -> dict:
    """The RunInstances arguments: a pure function, so its security settings are testable."""
    request: dict = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": spec.key_name,
        "IamInstanceProfile": {"Name": spec.instance_profile},
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": subnet_id,
                "Groups": [spec.security_group_id],
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }
        ],
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": spec.root_device_name,
                "Ebs": {
                    "VolumeSize": spec.volume_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance",
             "Tags": tags(spec.name) + [{"Key": "Name", "Value": f"sdtui-{spec.name}"}]},
            {"ResourceType": "volume", "Tags": tags(spec.name)},
            {"ResourceType": "network-interface", "Tags": tags(spec.name)},
        ],
        "ClientToken": uuid.uuid4().hex,  # botocore's own retries then cannot launch twice
        # The idle auto-stop shuts the OS down: that stops an on-demand instance (its disk and
        # image cache survive) and ends a one-time spot instance, which cannot be stopped.
        "InstanceInitiatedShutdownBehavior": "terminate" if spec.spot else "stop",
    }
    if spec.user_data:
        request["UserData"] = spec.user_data  # boto3 base64-encodes it
    if spec.spot:
        request["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    return request


# --- finding and waiting ----------------------------------------------------------------------


def find_instance(ec2, name: str) -> dict | None:
    """Our newest instance that is not terminated, or None."""
    reservations = ec2.describe_instances(
        Filters=[tag_filter(name), {"Name": "instance-state-name", "Values": LIVE_STATES}]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    return max(instances, key=lambda i: i["LaunchTime"]) if instances else None


def describe(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def spot_interruption(instance: dict) -> str | None:
    """A message when AWS took this spot instance back, else None."""
    reason = instance.get("StateReason", {})
    if reason.get("Code") == SPOT_TERMINATION:
        return (
            f"spot instance {instance['InstanceId']} was interrupted by AWS "
            f"({reason.get('Message', SPOT_TERMINATION)})"
        )
    return None


def wait_for(ec2, instance_id: str, waiter: str, config: dict) -> dict:
    try:
        ec2.get_waiter(waiter).wait(InstanceIds=[instance_id], WaiterConfig=config)
    except WaiterError:
        instance = describe(ec2, instance_id)
        if message := spot_interruption(instance):
            raise DeploymentError(
                message, fix="run again to launch a new one, or leave out --spot"
            ) from None
        seconds = config["Delay"] * config["MaxAttempts"]
        state = instance["State"]["Name"]
        raise DeploymentError(
            f"instance {instance_id} is still {state} after waiting {seconds} s",
            fix="check it in the EC2 console, then run again or tear down",
        ) from None
    return describe(ec2, instance_id)


# --- launching ------------------------------------------------------------------------------


def default_subnets(ec2) -> list[dict]:
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ]
    if not subnets:
        raise DeploymentError(
            "this region has no default subnets",
            fix="run `aws ec2 create-default-vpc` in this --region, or pick another region",
        )
    return sorted(subnets, key=lambda s: s["AvailabilityZone"])


def instance_vcpus(ec2, instance_type: str) -> int:
    """The type's vCPUs, from EC2 (when a client is given and answers); else from its size:
    every family sdtui offers has 4 vCPUs per `xlarge`."""
    if ec2 is not None:
        try:
            info = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
            return int(info[0]["VCpuInfo"]["DefaultVCpus"])
        except (ClientError, BotoCoreError, IndexError, KeyError):
            pass
    size = instance_type.partition(".")[2].removesuffix("xlarge")
    return 4 * (int(size) if size.isdigit() else 1)


def quota_error(instance_type: str, spot: bool, message: str,
                vcpus: int | None = None) -> DeploymentError:
    """The quota is counted in vCPUs: ask for at least what one instance of the type needs."""
    quota = P_FAMILY if instance_type.startswith("p") else G_AND_VT
    spot = spot or "spot" in message.lower()
    title, code = quota.spot if spot else quota.on_demand
    wanted = vcpus or instance_vcpus(None, instance_type)
    return DeploymentError(
        f"the vCPU quota {title!r} ({code}) is too low for a {instance_type} ({wanted} vCPUs)",
        fix=(
            "raise it in the Service Quotas console (EC2), or run `aws service-quotas "
            f"request-service-quota-increase --service-code ec2 --quota-code {code} "
            f"--desired-value {wanted}`"
        ),
    )


def ensure_instance(
    ec2,
    spec: LaunchSpec,
    *,
    log: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
    launcher=None,  # noqa: ANN001
) -> dict:
    """Our instance, running: reused, started, or launched. Returns its description.
    `launcher` is the client RunInstances goes through: pass session.launch_client's, which
    does not retry, so a zone without capacity is left at once (default: `ec2`)."""
    existing = find_instance(ec2, spec.name)
    if existing is not None:
        return _bring_up(ec2, existing, log)
    instance_id = launch(ec2, spec, log=log, sleep=sleep, launcher=launcher)
    return wait_for(ec2, instance_id, "instance_running", RUNNING_WAIT)


def _start(ec2, instance: dict) -> None:
    """StartInstances; a stopped instance cannot move to another zone, so a capacity shortage
    in its own zone can only be waited out (or the instance replaced)."""
    try:
        ec2.start_instances(InstanceIds=[instance["InstanceId"]])
    except ClientError as exc:
        if error_code(exc) not in {"InsufficientInstanceCapacity", "InsufficientCapacity"}:
            raise
        zone = instance.get("Placement", {}).get("AvailabilityZone", "its zone")
        raise DeploymentError(
            f"AWS has no {instance.get('InstanceType', 'GPU')} capacity in {zone} to start "
            f"the stopped instance {instance['InstanceId']} (a stopped instance cannot move to "
            "another zone)",
            fix="try again in a few minutes, or tear it down (sdtui --no-ui --option aws "
                "--teardown; the bucket is kept) and run again to launch in a zone with "
                "capacity",
        ) from None


def _bring_up(ec2, instance: dict, log: Callable[[str], None]) -> dict:
    instance_id, state = instance["InstanceId"], instance["State"]["Name"]
    if state == "running":
        return instance
    if state in {"pending"}:
        log(f"instance {instance_id} is starting")
        return wait_for(ec2, instance_id, "instance_running", RUNNING_WAIT)
    if state == "stopping":
        log(f"instance {instance_id} is stopping; waiting to start it again")
        wait_for(ec2, instance_id, "instance_stopped", STOPPED_WAIT)
    log(f"starting stopped instance {instance_id}")
    _start(ec2, instance)
    return wait_for(ec2, instance_id, "instance_running", RUNNING_WAIT)


def launch(
    ec2,
    spec: LaunchSpec,
    *,
    log: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
    launcher=None,  # noqa: ANN001
) -> str:
    """RunInstances (through `launcher`, default `ec2`), trying each availability zone on a
    capacity shortage and waiting out IAM profile propagation. Returns the instance id."""
    subnets = default_subnets(ec2)
    tried: list[str] = []
    for subnet in subnets:
        zone = subnet["AvailabilityZone"]
        try:
            return _run_with_profile_retry(launcher or ec2, spec, subnet["SubnetId"], log, sleep)
        except ClientError as exc:
            code, message = error_code(exc), error_message(exc)
            if code in {"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"}:
                raise quota_error(spec.instance_type, spec.spot, message,
                                  instance_vcpus(ec2, spec.instance_type)) from None
            if code in {"InsufficientInstanceCapacity", "InsufficientCapacity"}:
                tried.append(zone)
                log(f"no {spec.instance_type} capacity in {zone}; trying another zone")
                continue
            if code == "Unsupported":  # the type is not offered in this zone
                tried.append(zone)
                log(f"{spec.instance_type} is not offered in {zone}; trying another zone")
                continue
            raise DeploymentError(f"could not launch the instance: {code}: {message}") from None
    alternatives = "another --region or --instance-type (e.g. g5.xlarge)"
    if not spec.spot:
        alternatives += ", or --spot"
    raise DeploymentError(
        f"AWS has no {spec.instance_type} capacity right now in {', '.join(tried)}",
        fix=f"try again in a few minutes, or {alternatives}",
    )


def _run_with_profile_retry(ec2, spec: LaunchSpec, subnet_id: str,
                            log: Callable[[str], None], sleep: Callable[[float], None]) -> str:
    for attempt, delay in enumerate((*PROFILE_RETRY_DELAYS, None)):
        try:
            reply = ec2.run_instances(**launch_request(spec, subnet_id))
            return reply["Instances"][0]["InstanceId"]
        except ClientError as exc:
            if not _profile_not_ready(exc) or delay is None:
                if _profile_not_ready(exc):
                    raise DeploymentError(
                        f"instance profile {spec.instance_profile} is still not usable by EC2 "
                        f"after {attempt + 1} tries",
                        fix="wait a minute and run again",
                    ) from None
                raise
            log(f"instance profile not visible to EC2 yet; retrying in {delay} s")
            sleep(delay)
    raise AssertionError("unreachable")


def _profile_not_ready(exc: ClientError) -> bool:
    return error_code(exc) == "InvalidParameterValue" and (
        "iam instance profile" in error_message(exc).lower()
    )


def terminate(ec2, instance_ids: list[str], config: dict | None = None) -> None:
    """Terminate and wait (bounded) until they are gone."""
    if not instance_ids:
        return
    ec2.terminate_instances(InstanceIds=instance_ids)
    ec2.get_waiter("instance_terminated").wait(
        InstanceIds=instance_ids, WaiterConfig=config or {"Delay": 5, "MaxAttempts": 60}
    )
