"""Bad input is refused with one clear line before anything is created in AWS."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from sdtui.deploy.aws.steps import aws_steps
from sdtui.deploy.base import run_steps
from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.ledger import Ledger

from .helpers import no_public_ip, settings


def nothing_created(aws) -> bool:
    ec2, iam, s3 = aws["ec2"], aws["iam"], aws["s3"]
    return (
        s3.list_buckets()["Buckets"] == []
        and iam.list_roles()["Roles"] == []
        and iam.list_instance_profiles()["InstanceProfiles"] == []
        and ec2.describe_key_pairs()["KeyPairs"] == []
        and ec2.describe_instances()["Reservations"] == []
        and [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
        == ["default"]
    )


def refused(model, **overrides) -> BadInput:
    with pytest.raises(BadInput) as err:
        steps = aws_steps(settings(model, **overrides), Ledger.open("t1", "aws"),
                          public_ip=no_public_ip)
        run_steps(steps, lambda event: None)
    assert err.value.exit_code == EXIT_BAD_INPUT and err.value.fix
    assert "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize("name, problem", [
    ("ab", "2 characters long"),
    ("My_Models", "characters S3 does not allow"),
    ("models-", "characters S3 does not allow"),
    ("192.168.5.4", "IP address"),
    ("xn--models", "prefix"),
    ("models-s3alias", "suffix"),
    ("a..b", "adjacent dots"),
])
def test_an_invalid_bucket_name(model, aws, name, problem):
    error = refused(model, bucket=name)
    assert problem in str(error) and "--bucket" in str(error)
    assert nothing_created(aws)


def test_an_unknown_region(model, aws):
    error = refused(model, region="moon-central-1")
    assert "unknown AWS region 'moon-central-1'" in str(error) and "us-east-1" in str(error)
    assert nothing_created(aws)


def test_an_unknown_instance_type(model, aws):
    error = refused(model, instance_type="t2.micro")
    assert "'t2.micro' is not a supported NVIDIA GPU type" in str(error)
    assert "g4dn.*" in str(error)
    assert nothing_created(aws)


def test_missing_credentials_name_where_they_were_looked_for(model, aws, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    error = refused(model)
    text = str(error)
    assert "no AWS credentials found" in text
    assert "AWS_ACCESS_KEY_ID" in text and "~/.aws/credentials" in text and "SSO" in text
    assert "aws configure" in text and "aws sso login" in text
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert nothing_created(aws)


def test_an_unknown_profile(model, aws):
    error = refused(model, profile="nope")
    assert "profile 'nope'" in str(error) and "aws configure --profile nope" in str(error)
    assert nothing_created(aws)


def test_missing_model_files(model, aws):
    error = refused(model, models=[Path("/nowhere/sd-v1-4.ckpt")])
    assert "/nowhere/sd-v1-4.ckpt does not exist" in str(error)
    assert nothing_created(aws)


def test_a_file_that_is_not_a_model(model, aws, tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    assert "not a Stable Diffusion checkpoint" in str(refused(model, models=[bogus]))
    assert nothing_created(aws)


def test_a_malformed_ssh_cidr_and_ami(model, aws):
    assert "--ssh-cidr" in str(refused(model, ssh_cidr="my laptop"))
    assert "--ami" in str(refused(model, ami="ubuntu"))
    assert nothing_created(aws)


def test_a_pinned_ami_that_does_not_exist_stops_before_the_bucket(model, aws):
    error = refused(model, ami="ami-0123456789abcdef0")
    assert "AMI ami-0123456789abcdef0 does not exist" in str(error)
    assert nothing_created(aws)


def test_p3_is_refused_because_the_amis_driver_dropped_volta(model, aws):
    error = refused(model, instance_type="p3.2xlarge")
    assert "Volta" in str(error) and "595" in str(error)
    assert "p3" not in error.fix and "g4dn.*" in error.fix
    assert nothing_created(aws)


@pytest.mark.parametrize("region, partition", [
    ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov"), ("us-iso-east-1", "aws-iso"),
])
def test_a_region_outside_the_aws_partition_is_refused(model, aws, region, partition):
    """Its ARNs (arn:aws-cn:...), service principals and S3 URLs differ from the ones sdtui
    writes."""
    error = refused(model, region=region)
    assert f"region {region!r} is in the {partition} partition" in str(error)
    assert "us-east-1" in error.fix
    assert nothing_created(aws)


def test_a_bucket_name_with_dots_is_accepted(model, aws):
    """Mounted by path, so S3's wildcard certificate still matches (test_s3fs_imdsv2.py)."""
    settings(model, bucket="models.example.com").validate()


def test_a_bucket_in_another_region_is_refused_before_anything_is_launched(model, aws):
    """s3fs on the instance mounts with the deployment's region and would refuse such a bucket
    only after daemonising ("The bucket region is not ..."): say so before any launch."""
    import boto3

    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="sdtui-test-models",
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    error = refused(model)
    assert "bucket 'sdtui-test-models' is in eu-west-1, not in the deployment's region " \
        "us-east-1" in str(error)
    assert "--region eu-west-1" in error.fix
    iam, ec2 = aws["iam"], aws["ec2"]
    assert iam.list_roles()["Roles"] == [] and ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket="sdtui-test-models")  # no upload


def test_an_ecr_repository_of_the_name_that_is_not_ours(model, aws):
    """A repository named sdtui-<name> without our tag (someone else's) is refused before the
    bucket, the role or the instance exist, and is left as it was."""
    ecr_client = boto3.client("ecr")
    ecr_client.create_repository(repositoryName="sdtui-t1")
    error = refused(model)
    assert "ECR repository sdtui-t1 exists and is not sdtui's" in str(error)
    assert "--name" in error.fix
    assert nothing_created(aws)
    assert [r["repositoryName"] for r in ecr_client.describe_repositories()["repositories"]] == [
        "sdtui-t1"]
