"""How we reach the instance: a locally generated ed25519 key pair, and a security group that
lets SSH in from the caller's own address only."""

from __future__ import annotations

import ipaddress
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdtui.deploy.aws.naming import (
    error_code,
    key_pair_name,
    security_group_name,
    tag_filter,
    tags,
)
from sdtui.errors import BadInput, DeploymentError
from sdtui.paths import state_dir

PUBLIC_IP_URL = "https://checkip.amazonaws.com"


@dataclass(frozen=True)
class KeyPair:
    name: str
    private_key: Path


def private_key_path(name: str) -> Path:
    return state_dir() / "keys" / name


def detect_public_ip(url: str = PUBLIC_IP_URL, timeout: float = 5.0) -> str:
    """The caller's public IPv4 address as AWS sees it, as a /32."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (fixed https)
            address = ipaddress.ip_address(reply.read().decode().strip())
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"could not find this machine's public IP address ({exc})",
            fix="pass --ssh-cidr with your address, e.g. 203.0.113.7/32",
        ) from None
    return f"{address}/{address.max_prefixlen}"


# --- key pair -------------------------------------------------------------------------------


def write_private_key(path: Path) -> str:
    """Generate a key, write it mode 0600 (never readable by others, not even briefly) and
    return the OpenSSH public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    return _public_key(path)


def _public_key(path: Path) -> str:
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _remote_key_exists(ec2, key_name: str) -> bool:
    try:
        ec2.describe_key_pairs(KeyNames=[key_name])
    except ClientError as exc:
        if error_code(exc) == "InvalidKeyPair.NotFound":
            return False
        raise
    return True


def ensure_key_pair(ec2, name: str) -> KeyPair:
    key_name = key_pair_name(name)
    path = private_key_path(name)
    if path.exists() and _remote_key_exists(ec2, key_name):
        return KeyPair(key_name, path)
    if _remote_key_exists(ec2, key_name):  # its private half is lost: replace it
        ec2.delete_key_pair(KeyName=key_name)
    public = _public_key(path) if path.exists() else write_private_key(path)
    ec2.import_key_pair(
        KeyName=key_name,
        PublicKeyMaterial=public.encode(),
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags(name)}],
    )
    return KeyPair(key_name, path)


def key_pair_ready(ec2, name: str) -> bool:
    return private_key_path(name).exists() and _remote_key_exists(ec2, key_pair_name(name))


def delete_key_pair(ec2, name: str) -> bool:
    """The key pair in EC2 and the local private key; False when neither existed."""
    existed = _remote_key_exists(ec2, key_pair_name(name))
    if existed:
        ec2.delete_key_pair(KeyName=key_pair_name(name))
    path = private_key_path(name)
    if path.exists():
        path.unlink()
        existed = True
    return existed


# --- security group -------------------------------------------------------------------------


def default_vpc(ec2) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise DeploymentError(
            "this region has no default VPC",
            fix="run `aws ec2 create-default-vpc` in this --region, or pick another region",
        )
    return vpcs[0]["VpcId"]


def ssh_rule(cidr: str) -> dict:
    return {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": cidr, "Description": "sdtui: SSH from the deploying machine"}],
    }


def find_security_group(ec2, name: str) -> dict | None:
    groups = ec2.describe_security_groups(
        Filters=[tag_filter(name), {"Name": "group-name", "Values": [security_group_name(name)]}]
    )["SecurityGroups"]
    return groups[0] if groups else None


def _only_ssh_from(group: dict, cidr: str) -> bool:
    rules = group.get("IpPermissions", [])
    return (
        len(rules) == 1
        and rules[0].get("IpProtocol") == "tcp"
        and rules[0].get("FromPort") == 22
        and rules[0].get("ToPort") == 22
        and [r["CidrIp"] for r in rules[0].get("IpRanges", [])] == [cidr]
        and not rules[0].get("Ipv6Ranges")
        and not rules[0].get("UserIdGroupPairs")
        and not rules[0].get("PrefixListIds")
    )


def ensure_security_group(ec2, name: str, cidr: str) -> str:
    """The group, its ingress exactly SSH from `cidr` (stale addresses revoked)."""
    group = find_security_group(ec2, name)
    if group is None:
        group_id = ec2.create_security_group(
            GroupName=security_group_name(name),
            Description=f"sdtui deployment {name}: SSH from the deploying machine only",
            VpcId=default_vpc(ec2),
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags(name)}],
        )["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[ssh_rule(cidr)])
        return group_id
    if not _only_ssh_from(group, cidr):
        if group.get("IpPermissions"):
            ec2.revoke_security_group_ingress(
                GroupId=group["GroupId"], IpPermissions=group["IpPermissions"]
            )
        ec2.authorize_security_group_ingress(
            GroupId=group["GroupId"], IpPermissions=[ssh_rule(cidr)]
        )
    return group["GroupId"]


def security_group_ready(ec2, name: str, cidr: str) -> bool:
    group = find_security_group(ec2, name)
    return group is not None and _only_ssh_from(group, cidr)


def delete_security_group(ec2, group_id: str, delays: tuple[float, ...],
                          sleep: Callable[[float], None] = time.sleep) -> bool:
    """Retried after each of `delays` while it is still in use (AWS releases an instance's
    network interface late); False when it was already gone."""
    for delay in (*delays, None):
        try:
            ec2.delete_security_group(GroupId=group_id)
            return True
        except ClientError as exc:
            if error_code(exc) == "InvalidGroup.NotFound":
                return False
            if error_code(exc) != "DependencyViolation" or delay is None:
                raise
            sleep(delay)
    return True
