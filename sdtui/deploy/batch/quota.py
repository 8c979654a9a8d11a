"""The account's G and VT vCPU quota (Service Quotas), checked before a run is submitted: a run
of W shards needs 4·W vCPUs, and Batch would otherwise leave the jobs RUNNABLE forever."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from sdtui.deploy.aws.naming import error_code, error_message
from sdtui.deploy.batch.compute import max_vcpus
from sdtui.errors import BadInput

ON_DEMAND = ("L-DB2E81BA", "Running On-Demand G and VT instances")
SPOT = ("L-3819A6DF", "All G and VT Spot Instance Requests")


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    vcpus: float | None  # None: it could not be read


def gpu_quota(quotas, spot: bool) -> Quota:
    """The applied quota, else the AWS default; vcpus None when neither can be read."""
    code, name = SPOT if spot else ON_DEMAND
    for call in (quotas.get_service_quota, quotas.get_aws_default_service_quota):
        try:
            return Quota(code, name, float(call(ServiceCode="ec2", QuotaCode=code)
                                           ["Quota"]["Value"]))
        except ClientError as exc:
            if error_code(exc) != "NoSuchResourceException":
                return Quota(code, f"{name} ({error_code(exc)}: {error_message(exc)})", None)
        except (BotoCoreError, KeyError, TypeError, ValueError):
            break
    return Quota(code, name, None)


def check(quotas, shards: int, spot: bool, region: str,
          warn: Callable[[str], None] = lambda line: None) -> Quota:
    """BadInput when 4·W vCPUs exceed the quota; a warning when the quota cannot be read."""
    quota = gpu_quota(quotas, spot)
    needed = max_vcpus(shards)
    raise_it = (f"aws service-quotas request-service-quota-increase --region {region} "
                f"--service-code ec2 --quota-code {quota.code} --desired-value {needed}")
    if quota.vcpus is None:
        warn(f"could not read the quota {quota.code} ({quota.name}); if the jobs stay "
             f"RUNNABLE, raise it: {raise_it}")
    elif needed > quota.vcpus:
        fits = int(quota.vcpus) // max_vcpus(1)
        raise BadInput(
            f"{shards} GPU(s) need {needed} vCPUs but the quota {quota.code} ({quota.name}) "
            f"in {region} is {quota.vcpus:g}",
            fix=(f"pass --gpus {fits} or " if fits else "") + f"raise it: {raise_it}")
    return quota
