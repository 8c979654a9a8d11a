"""Every step against moto over HTTP: the security settings of what they create, idempotency,
and a teardown that leaves nothing tagged behind."""

from __future__ import annotations

import json
import stat
import subprocess

import boto3
import cli_zygote
import pytest
from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import TAG_KEY
from sdtui.deploy.aws.steps import aws_steps
from sdtui.deploy.aws.teardown import teardown
from sdtui.deploy.base import CostUpdate
from sdtui.deploy.settings import Target, resolve_settings
from sdtui.errors import EXIT_BAD_INPUT
from sdtui.ledger import Ledger
from sdtui.paths import state_dir

from .helpers import CIDR, no_public_ip, outcomes, run, settings


def provision(model, **overrides):
    ledger = Ledger.open("t1", "aws")
    costs: list[CostUpdate] = []
    steps = aws_steps(settings(model, **overrides), ledger, public_ip=no_public_ip,
                      on_cost=costs.append, sleep=lambda s: None)
    return ledger, run(steps), costs


def test_a_full_run_creates_private_tagged_resources(model, aws):
    ledger, events, costs = provision(model)
    assert set(outcomes(events).values()) == {"done"}
    s3, ec2, iam = aws["s3"], aws["ec2"], aws["iam"]

    block = s3.get_public_access_block(Bucket="sdtui-test-models")
    assert block["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True,
        "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
    }
    owner = s3.get_bucket_ownership_controls(Bucket="sdtui-test-models")
    assert owner["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    sse = s3.get_bucket_encryption(Bucket="sdtui-test-models")["ServerSideEncryptionConfiguration"]
    assert sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert {"Key": TAG_KEY, "Value": "t1"} in s3.get_bucket_tagging(
        Bucket="sdtui-test-models")["TagSet"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="sdtui-test-models")["Contents"])
    assert keys == ["tiny.safetensors", "tiny.yaml"]  # the sidecar travels with its checkpoint

    role = iam.get_role(RoleName="sdtui-t1-role")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]
    assert {"Key": TAG_KEY, "Value": "t1"} in role["Tags"]
    assert iam.list_role_policies(RoleName="sdtui-t1-role")["PolicyNames"] == [
        "sdtui-read-model-bucket"]
    assert iam.list_attached_role_policies(RoleName="sdtui-t1-role")["AttachedPolicies"] == []
    doc = iam.get_role_policy(RoleName="sdtui-t1-role",
                              PolicyName="sdtui-read-model-bucket")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    assert sorted((s["Effect"], s["Action"], s["Resource"]) for s in doc["Statement"]) == [
        ("Allow", "s3:GetObject", "arn:aws:s3:::sdtui-test-models/*"),
        ("Allow", "s3:ListBucket", "arn:aws:s3:::sdtui-test-models"),
    ]
    profile = iam.get_instance_profile(InstanceProfileName="sdtui-t1")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["sdtui-t1-role"]

    key_path = state_dir() / "keys" / "t1"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"OPENSSH PRIVATE KEY" in key_path.read_bytes()
    pair = ec2.describe_key_pairs(KeyNames=["sdtui-t1"])["KeyPairs"][0]
    assert {"Key": TAG_KEY, "Value": "t1"} in pair["Tags"]

    group = ec2.describe_security_groups(GroupNames=["sdtui-t1"])["SecurityGroups"][0]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
            for p in group["IpPermissions"]] == [("tcp", 22, 22, [CIDR])]
    assert {"Key": TAG_KEY, "Value": "t1"} in group["Tags"]

    reservations = ec2.describe_instances(
        Filters=[{"Name": f"tag:{TAG_KEY}", "Values": ["t1"]}])["Reservations"]
    [inst] = [i for r in reservations for i in r["Instances"]]
    assert inst["State"]["Name"] == "running"
    assert inst["InstanceType"] == "g4dn.xlarge"
    assert inst["KeyName"] == "sdtui-t1"
    assert inst["IamInstanceProfile"]["Arn"].endswith("/sdtui-t1")
    assert [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]] == [group["GroupId"]]
    meta = inst["MetadataOptions"]
    assert (meta["HttpTokens"], meta["HttpPutResponseHopLimit"], meta["HttpEndpoint"]) == (
        "required", 1, "enabled")
    assert {"Key": TAG_KEY, "Value": "t1"} in inst["Tags"]
    volume_ids = [m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]]
    volumes = ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"]
    assert [(v["Encrypted"], v["VolumeType"], v["Size"]) for v in volumes] == [(True, "gp3", 100)]
    assert all({"Key": TAG_KEY, "Value": "t1"} in v["Tags"] for v in volumes)

    assert costs and costs[-1].hourly_usd == 0.526  # Pricing API absent in moto: the table
    assert ledger.params["ami_id"] and ledger.get("instance").id == inst["InstanceId"]


def count_resources(aws) -> dict[str, int]:
    ec2, iam, s3 = aws["ec2"], aws["iam"], aws["s3"]
    live = {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}
    return {
        "buckets": len(s3.list_buckets()["Buckets"]),
        "instances": sum(len(r["Instances"]) for r in ec2.describe_instances(
            Filters=[live])["Reservations"]),
        "groups": len(ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["sdtui-t1"]}])["SecurityGroups"]),
        "keys": len(ec2.describe_key_pairs()["KeyPairs"]),
        "roles": len(iam.list_roles()["Roles"]),
        "profiles": len(iam.list_instance_profiles()["InstanceProfiles"]),
        "objects": s3.list_objects_v2(Bucket="sdtui-test-models")["KeyCount"],
        "repositories": len(boto3.client("ecr").describe_repositories()["repositories"]),
    }


def test_running_the_steps_twice_creates_nothing_twice(model, aws):
    """The second run is a bare rerun, settings from the ledger: --ssh-cidr is kept with the
    others, so no address is looked up (offline) and the access step finds its rule."""
    provision(model)  # with --ssh-cidr CIDR
    before = count_resources(aws)
    again = resolve_settings(Target("t1", "aws", "name"), {}, for_use=True)
    assert again.ssh_cidr == CIDR
    events = run(aws_steps(again, Ledger.open("t1", "aws"), public_ip=no_public_ip,
                           sleep=lambda s: None))
    assert count_resources(aws) == before
    assert before["instances"] == 1 and before["roles"] == 1 and before["repositories"] == 1
    result = outcomes(events)
    assert {k: v for k, v in result.items() if k not in {"identity", "upload"}} == {
        "ami": "skipped", "bucket": "skipped", "iam": "skipped", "repository": "skipped",
        "access": "skipped", "instance": "skipped"}
    upload_detail = [e.detail for e in events
                     if type(e).__name__ == "StepFinished" and e.step == "upload"][0]
    assert "0 uploaded (0 bytes), 2 unchanged" in upload_detail


def test_a_stopped_instance_is_started_not_replaced(model, aws):
    ledger, _, _ = provision(model)
    instance_id = ledger.get("instance").id
    aws["ec2"].stop_instances(InstanceIds=[instance_id])
    _, events, _ = provision(model)
    assert outcomes(events)["instance"] == "done"
    assert count_resources(aws)["instances"] == 1
    state = aws["ec2"].describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"][0]["State"]["Name"]
    assert state == "running"


def test_a_changed_address_replaces_the_ssh_rule(model, aws):
    provision(model)
    provision(model, ssh_cidr="198.51.100.9/32")
    group = aws["ec2"].describe_security_groups(GroupNames=["sdtui-t1"])["SecurityGroups"][0]
    assert [[r["CidrIp"] for r in p["IpRanges"]] for p in group["IpPermissions"]] == [
        ["198.51.100.9/32"]]


def tagged(aws) -> list[str]:
    """Everything in moto that still carries a deployment tag, per service."""
    ec2, iam, s3 = aws["ec2"], aws["iam"], aws["s3"]
    found = []
    tag = [{"Name": f"tag:{TAG_KEY}", "Values": ["t1"]}]
    for r in ec2.describe_instances(Filters=tag)["Reservations"]:
        found += [i["InstanceId"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    found += [g["GroupId"] for g in ec2.describe_security_groups(Filters=tag)["SecurityGroups"]]
    found += [k["KeyName"] for k in ec2.describe_key_pairs(Filters=tag)["KeyPairs"]]
    found += [v["VolumeId"] for v in ec2.describe_volumes(Filters=tag)["Volumes"]]
    found += [r["RoleName"] for r in iam.list_roles()["Roles"]]
    found += [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]]
    found += [b["Name"] for b in s3.list_buckets()["Buckets"]]
    found += [r["repositoryName"]
              for r in boto3.client("ecr").describe_repositories()["repositories"]]
    return found


def test_teardown_leaves_nothing_but_the_kept_bucket_and_repository(model, aws):
    ledger, _, _ = provision(model)
    report = teardown(ledger and __import__("boto3").Session(region_name="us-east-1"), "t1",
                      ledger, sleep=lambda s: None)
    assert report.left == []
    # the bucket, and the worker image's repository that the next launch pulls from
    assert [r.id for r in report.kept] == ["sdtui-test-models", "sdtui-t1"]
    assert {r.kind for r in report.removed} == {
        "instance", "security_group", "key_pair", "instance_profile", "role"}
    assert tagged(aws) == ["sdtui-test-models", "sdtui-t1"]
    assert aws["s3"].list_objects_v2(Bucket="sdtui-test-models")["KeyCount"] == 2
    assert not (state_dir() / "keys" / "t1").exists()

    again = teardown(__import__("boto3").Session(region_name="us-east-1"), "t1",
                     Ledger.load("t1"), sleep=lambda s: None)
    assert again.removed == [] and again.left == []


def test_teardown_with_purge_removes_the_bucket_and_the_ledger(model, aws):
    import boto3

    ledger, _, _ = provision(model)
    report = teardown(boto3.Session(region_name="us-east-1"), "t1", ledger,
                      purge_bucket=True, sleep=lambda s: None)
    assert report.left == [] and report.kept == []
    assert {"bucket", "ecr_repository"} <= {r.kind for r in report.removed}
    assert tagged(aws) == []
    assert Ledger.load("t1") is None


def test_teardown_without_a_ledger_deletes_nothing_and_lists_what_is_tagged(model, aws):
    """Ownership needs the tag and this machine's ledger: another machine may run a deployment
    of the same name in the same account."""
    import boto3

    ledger, _, _ = provision(model)
    before = sorted(tagged(aws))
    ledger.delete()
    report = teardown(boto3.Session(region_name="us-east-1"), "t1", None, sleep=lambda s: None)
    assert report.removed == [] and sorted(tagged(aws)) == before
    assert [r.kind for r in report.left] == ["instance"]  # it costs money: say so
    assert "ecr_repository" in [r.kind for r in report.kept]  # listed, not deleted
    assert all("not in this machine's ledger" in r.note for r in report.left + report.kept)


def test_a_users_own_bucket_is_used_never_tagged_and_never_purged(model, aws):
    """A bucket that existed before: the model files go into it, but it is not marked as ours,
    --purge-bucket is refused before anything is deleted (exit 2), and a plain teardown keeps
    it, with the user's own objects, while removing everything sdtui created."""
    s3 = aws["s3"]
    s3.create_bucket(Bucket="users-own-models")
    s3.put_object(Bucket="users-own-models", Key="notes.txt", Body=b"mine")
    ledger, events, _ = provision(model, bucket="users-own-models")
    finished = {e.step: e.detail for e in events if type(e).__name__ == "StepFinished"}
    assert "yours (not created by sdtui)" in finished["bucket"]
    with pytest.raises(ClientError, match="NoSuchTagSet"):  # not marked as sdtui's
        s3.get_bucket_tagging(Bucket="users-own-models")
    created = sorted(tagged(aws))

    refused = cli("--name", "t1", "--teardown", "--purge-bucket")
    assert refused.returncode == EXIT_BAD_INPUT, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "bucket users-own-models was not created by sdtui" in line and "yours" in line
    assert sorted(tagged(aws)) == created  # nothing was deleted

    down = cli("--name", "t1", "--teardown")
    assert down.returncode == 0, down.stderr
    assert "kept bucket users-own-models: yours (not created by sdtui)" in down.stderr
    assert tagged(aws) == ["users-own-models"]  # (the test's tagged() lists every bucket)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="users-own-models")["Contents"])
    assert keys == ["notes.txt", "tiny.safetensors", "tiny.yaml"]
    assert Ledger.load("t1") is None
    status = cli("--name", "t1", "--status")
    assert "t1 (aws): absent" in status.stdout and "users-own-models" not in status.stdout


def test_purging_a_named_bucket_that_no_ledger_records_is_refused(aws):
    aws["s3"].create_bucket(Bucket="someone-elses")
    refused = cli("--name", "t9", "--bucket", "someone-elses", "--teardown", "--purge-bucket")
    assert refused.returncode == EXIT_BAD_INPUT
    assert "bucket someone-elses was not created by sdtui" in refused.stderr
    assert "someone-elses" in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]


def cli(*argv: str) -> subprocess.CompletedProcess:
    return cli_zygote.run(["--no-ui", "--option", "aws", *argv], text=True, timeout=300)
