"""Where the scale-out's instances live: the default VPC's default subnets (Option A's rule: a
subnet someone added to the default VPC may be private, with no route to ECR or S3), and a
security group of their own that lets nothing in (the shards only call out, to S3 and ECR)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdtui.deploy.aws import access
from sdtui.deploy.aws.access import default_vpc
from sdtui.deploy.aws.instance import default_subnets
from sdtui.deploy.aws.naming import tag_filter, tags
from sdtui.deploy.batch import names

RETRY_DELAYS = (5, 10, 20, 40)  # a group stays "in use" until the last instance's ENI is gone


def subnets(ec2) -> list[str]:
    return sorted(s["SubnetId"] for s in default_subnets(ec2))


def find_security_group(ec2, name: str) -> dict | None:
    groups = ec2.describe_security_groups(Filters=[
        tag_filter(name), {"Name": "group-name", "Values": [names.security_group(name)]}
    ])["SecurityGroups"]
    return groups[0] if groups else None


def ensure_security_group(ec2, name: str) -> str:
    """Our group with no inbound rule at all (any found are revoked)."""
    group = find_security_group(ec2, name)
    if group is None:
        return ec2.create_security_group(
            GroupName=names.security_group(name),
            Description=f"sdtui scale-out {name}: no inbound access",
            VpcId=default_vpc(ec2),
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags(name)}],
        )["GroupId"]
    if group.get("IpPermissions"):
        ec2.revoke_security_group_ingress(GroupId=group["GroupId"],
                                          IpPermissions=group["IpPermissions"])
    return group["GroupId"]


def delete_security_group(ec2, group_id: str,
                          sleep: Callable[[float], None] = time.sleep) -> bool:
    """Retried while the compute environment's instances still hold it; False when gone."""
    return access.delete_security_group(ec2, group_id, RETRY_DELAYS, sleep)
