"""Which machine image to boot: the current AWS Deep Learning Base OSS Nvidia Driver GPU AMI for
Ubuntu 24.04 (NVIDIA driver, Docker and the NVIDIA container toolkit preinstalled), or the one
--ami pins. (Ubuntu 24.04 rather than 22.04: the newer of the two the DLAMI is built on; the
instance builds its own s3fs either way, see s3fs.py.)"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import error_code
from sdtui.errors import BadInput, DeploymentError

SSM_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
)
NAME_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"
OWNERS = ("amazon",)


@dataclass(frozen=True)
class Ami:
    image_id: str
    name: str
    root_device_name: str
    source: str  # "pinned", "ssm" or "describe_images"


def resolve_ami(
    ssm, ec2, pinned: str | None = None, *, parameter: str = SSM_PARAMETER,
    owners: tuple[str, ...] = OWNERS,
) -> Ami:
    if pinned:
        image = describe_image(ec2, pinned)
        if image is None:
            raise BadInput(
                f"AMI {pinned} does not exist in this region or is not visible to this account",
                fix="pass an AMI id from this --region, or leave --ami out to use the current one",
            )
        return _ami(image, "pinned")
    image_id = _from_ssm(ssm, parameter)
    if image_id and (image := describe_image(ec2, image_id)):
        return _ami(image, "ssm")
    return _ami(_newest_by_name(ec2, owners), "describe_images")


def describe_image(ec2, image_id: str) -> dict | None:
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except ClientError as exc:
        if error_code(exc) in {"InvalidAMIID.NotFound", "InvalidAMIID.Malformed",
                               "InvalidAMIID.Unavailable"}:
            return None
        raise
    return images[0] if images and images[0].get("State", "available") == "available" else None


def _from_ssm(ssm, parameter: str) -> str | None:
    try:
        return ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as exc:
        if error_code(exc) in {"ParameterNotFound", "AccessDeniedException"}:
            return None
        raise


def _newest_by_name(ec2, owners: tuple[str, ...]) -> dict:
    images = ec2.describe_images(
        Owners=list(owners),
        Filters=[
            {"Name": "name", "Values": [NAME_PATTERN]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": ["x86_64"]},
        ],
    )["Images"]
    if not images:
        raise DeploymentError(
            "found no AWS Deep Learning GPU AMI for Ubuntu 24.04 in this region",
            fix="pass --ami with a GPU AMI id, or use another --region",
        )
    return max(images, key=lambda image: image.get("CreationDate", ""))


def _ami(image: dict, source: str) -> Ami:
    return Ami(
        image_id=image["ImageId"],
        name=image.get("Name", ""),
        root_device_name=image.get("RootDeviceName", "/dev/sda1"),
        source=source,
    )
