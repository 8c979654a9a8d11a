"""What an Option A deployment is asked to be, and the local checks that run before any call."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError

from sdtui.container.context import DEFAULT_BASE_IMAGE
from sdtui.deploy.kept_model import recorded_gone
from sdtui.errors import BadInput
from sdtui.fetch.named import ModelByName
from sdtui.ledger import validate_name
from sdtui.modelfiles import check_extras, check_models

# GPU instance types that run Stable Diffusion well (x86_64, NVIDIA, >= 16 GB of GPU memory)
# and that the Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) supports: its
# release notes list G4dn, G5, G6, G6e, P4d and P5 (among others). p3 is not offered: its V100
# is a Volta GPU, which the AMI's NVIDIA driver (595) no longer supports.
GPU_INSTANCE_TYPES: dict[str, tuple[str, ...]] = {
    "g4dn": ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "g5": ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "g6": ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "g6e": ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "p4d": ("24xlarge",),
    "p5": ("48xlarge",),
}

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
UNSUPPORTED_FAMILIES = {
    "p3": "its V100 is a Volta GPU, which the Deep Learning AMI's NVIDIA driver (595) no longer "
          "supports",
    "p2": "its K80 is a Kepler GPU, which the Deep Learning AMI's NVIDIA driver no longer supports",
}
PARTITION = "aws"  # ARNs, service principals and S3 URLs are written for this partition
MIN_VOLUME_GB = 60  # the Deep Learning AMI itself takes about 45 GB


@dataclass
class AwsSettings(ModelByName):
    name: str
    region: str | None
    bucket: str
    # Files here (uploaded), or one name to fetch (the instance fetches it into the bucket).
    models: list[Path | str] = field(default_factory=list)
    # LoRAs to fetch (with a model to fetch) into the loras/ folder beside it in the bucket.
    lora_files: list[str] = field(default_factory=list)
    profile: str | None = None
    instance_type: str = "g4dn.xlarge"
    spot: bool = False
    idle_minutes: int = 30
    ami: str | None = None
    ssh_cidr: str | None = None
    volume_gb: int = 100
    base_image: str = DEFAULT_BASE_IMAGE
    dockerfile: str = "Dockerfile"  # tests build Dockerfile.local (SDTUI_TEST_DOCKERFILE)

    def validate(self) -> None:
        """Everything that can be checked without calling AWS; raises BadInput on the first
        problem. Also fills in the region from the profile's config when none was given."""
        validate_name(self.name)
        self.region = resolve_region(self.region, self.profile)
        check_bucket_name(self.bucket)
        check_instance_type(self.instance_type)
        if self.ami is not None and not AMI_ID.match(self.ami):
            raise BadInput(f"--ami {self.ami!r} is not an AMI id", fix="pass one like ami-0abc1234")
        if self.ssh_cidr is not None:
            self.ssh_cidr = check_cidr(self.ssh_cidr)
        if self.idle_minutes < 1:
            raise BadInput(f"--idle-minutes {self.idle_minutes} is too small", fix="pass 1 or more")
        if self.volume_gb < MIN_VOLUME_GB:
            raise BadInput(
                f"a {self.volume_gb} GB root volume is too small for the CUDA image",
                fix=f"pass --volume-gb {MIN_VOLUME_GB} or more (100 is the default)",
            )
        self.check_lora_files("Option A")
        if self.fetched_model() is None and not self.model_kept():
            check_models(self.models)
        elif self.fetched_model() is None:
            check_extras(self.models[1:])
        elif self.models[1:]:
            raise BadInput(f"{self.models[1]} travels beside a model to fetch, which Option A "
                           "does not upload yet",
                           fix="put the extra file in the bucket yourself, or give the model "
                           "as a file")

    def model_kept(self) -> bool:
        return bool(self.kept_objects())

    def kept_objects(self) -> dict[str, dict]:
        """The model file is gone from this machine, yet this deployment's ledger records it as
        its model and the upload of its objects (key -> size and sha256): the bucket's copy
        serves a run that needs no upload (the upload step checks the bucket still holds it).
        Empty otherwise."""
        ledger = recorded_gone(self.name, "aws", self.models)
        if ledger is None:
            return {}
        name = Path(self.models[0]).name
        return {e.id: e.meta for e in ledger.resources("object")
                if (e.id == name or e.id.startswith(f"{name}/")) and e.meta.get("sha256")}

    def uploads(self) -> list[Path]:
        """The files this machine uploads: none when the instance fetches the model."""
        return [] if self.fetched_model() else [Path(m) for m in self.models]


def check_bucket_name(bucket: str) -> None:
    """S3's naming rules for general purpose buckets."""
    fix = (
        "pass a --bucket of 3-63 lowercase letters, digits, hyphens and dots, "
        "alphanumeric at both ends"
    )
    problem = None
    if not 3 <= len(bucket) <= 63:
        problem = f"is {len(bucket)} characters long"
    elif not BUCKET_NAME.match(bucket):
        problem = "has characters S3 does not allow"
    elif ".." in bucket or ".-" in bucket or "-." in bucket:
        problem = "has adjacent dots or a dot next to a hyphen"
    elif _is_ipv4(bucket):
        problem = "looks like an IP address"
    elif bucket.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        problem = "starts with a prefix S3 reserves"
    elif bucket.endswith(("-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3")):
        problem = "ends with a suffix S3 reserves"
    if problem:
        raise BadInput(f"bucket name {bucket!r} {problem}", fix=fix)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def known_regions() -> set[str]:
    """The regions of the `aws` partition that offer EC2."""
    return set(boto3.session.Session().get_available_regions("ec2", partition_name=PARTITION))


def resolve_region(region: str | None, profile: str | None) -> str:
    if region is None:
        try:
            region = boto3.session.Session(profile_name=profile).region_name
        except Exception:  # a missing profile is reported by the identity step
            region = None
    if not region:
        raise BadInput(
            "no AWS region given", fix="pass --region (e.g. us-east-1) or set AWS_REGION"
        )
    if region not in known_regions():
        try:
            partition = boto3.session.Session().get_partition_for_region(region)
        except BotoCoreError:  # no partition claims the name
            partition = None
        if partition and partition != PARTITION:
            raise BadInput(
                f"region {region!r} is in the {partition} partition, which sdtui does not "
                f"support (its roles, policies and S3 addresses are written for the "
                f"{PARTITION} partition)",
                fix="pass a region of the standard partition, e.g. us-east-1 or eu-west-1",
            )
        raise BadInput(
            f"unknown AWS region {region!r}",
            fix="pass a region EC2 offers, e.g. us-east-1, us-west-2 or eu-west-1",
        )
    return region


def check_instance_type(instance_type: str) -> None:
    family, _, size = instance_type.partition(".")
    if size in GPU_INSTANCE_TYPES.get(family, ()):
        return
    allowed = ", ".join(f"{f}.*" for f in GPU_INSTANCE_TYPES)
    fix = f"pass --instance-type from {allowed} (default g4dn.xlarge)"
    if family in UNSUPPORTED_FAMILIES:
        raise BadInput(f"instance type {instance_type!r} is not supported: "
                       f"{UNSUPPORTED_FAMILIES[family]}", fix=fix)
    raise BadInput(f"instance type {instance_type!r} is not a supported NVIDIA GPU type", fix=fix)


def check_cidr(cidr: str) -> str:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        raise BadInput(
            f"--ssh-cidr {cidr!r} is not an address range", fix="pass one like 203.0.113.7/32"
        ) from None
