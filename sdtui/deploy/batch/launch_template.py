"""The launch template Batch starts the GPU instances from: IMDSv2 required with hop limit 1
(containers cannot reach the instance role; shards use the job role), and an encrypted gp3
root volume big enough for the CUDA image and a model in scratch."""

from __future__ import annotations

from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import error_code, tags
from sdtui.deploy.batch import names

ROOT_DEVICE = "/dev/xvda"  # the ECS-optimized Amazon Linux 2023 AMIs' root device
LATEST = "$Latest"


def template_data(volume_gb: int) -> dict:
    return {
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                            "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": ROOT_DEVICE, "Ebs": {
            "Encrypted": True, "VolumeSize": volume_gb, "VolumeType": "gp3",
            "DeleteOnTermination": True}}],
    }


def find(ec2, name: str) -> str | None:
    """Our template's id; BadInput when one of that name exists without our tag."""
    try:
        found = ec2.describe_launch_templates(
            LaunchTemplateNames=[names.launch_template(name)])["LaunchTemplates"]
    except ClientError as exc:
        if error_code(exc) in {"InvalidLaunchTemplateName.NotFoundException",
                               "InvalidLaunchTemplateName.NotFound"}:
            return None
        raise
    if not found:
        return None
    names.check_ours("launch template", names.launch_template(name),
                     {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}, name)
    return found[0]["LaunchTemplateId"]


def ensure(ec2, name: str, volume_gb: int) -> tuple[str, int]:
    """Our template, with the current data as its latest version; returns its id and that
    version's number (the compute environment names the number)."""
    data = template_data(volume_gb)
    template_id = find(ec2, name)
    if template_id is None:
        made = ec2.create_launch_template(
            LaunchTemplateName=names.launch_template(name), LaunchTemplateData=data,
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags(name)}],
        )["LaunchTemplate"]
        return made["LaunchTemplateId"], int(made["LatestVersionNumber"])
    latest = ec2.describe_launch_template_versions(
        LaunchTemplateId=template_id, Versions=[LATEST])["LaunchTemplateVersions"][0]
    if not _differs(latest.get("LaunchTemplateData", {}), data):
        return template_id, int(latest["VersionNumber"])
    made = ec2.create_launch_template_version(LaunchTemplateId=template_id,
                                              LaunchTemplateData=data)["LaunchTemplateVersion"]
    return template_id, int(made["VersionNumber"])


def _differs(current: dict, wanted: dict) -> bool:
    options = current.get("MetadataOptions", {})
    if any(options.get(k) != v for k, v in wanted["MetadataOptions"].items()):
        return True
    disks = {d.get("DeviceName"): d.get("Ebs", {}) for d in current.get("BlockDeviceMappings", [])}
    ebs = disks.get(ROOT_DEVICE, {})
    return any(ebs.get(k) != v for k, v in wanted["BlockDeviceMappings"][0]["Ebs"].items())


def delete(ec2, name: str) -> bool:
    template_id = find(ec2, name)
    if template_id is None:
        return False
    ec2.delete_launch_template(LaunchTemplateId=template_id)
    return True
