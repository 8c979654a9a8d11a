"""Bad input to --option batch: one line naming the problem and its fix, exit 2, and nothing
created in AWS (every resource kind the scale-out makes is listed in moto) nor a ledger."""

from __future__ import annotations

import pytest

from sdtui.cli import main
from sdtui.errors import EXIT_BAD_INPUT

from ..conftest import write_safetensors

BUCKET = "sdtui-batch-bad-input"


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red fox\na lighthouse\n# a comment\na teapot\na cat\n")
    return path


@pytest.fixture
def local_model(tmp_path):
    (tmp_path / "m").mkdir()
    return write_safetensors(tmp_path / "m" / "tiny.safetensors")


def batch(capsys, *args: str) -> tuple[int, str]:
    code = main(["--no-ui", "--option", "batch", "--name", "bad", *args])
    return code, capsys.readouterr().err


def created(aws, tmp_path, theirs: tuple[str, ...] = ()) -> list[str]:
    """Everything in moto and the state dir but the buckets the test itself made (`theirs`)."""
    import boto3

    b, ecr = boto3.client("batch"), boto3.client("ecr")
    found = [e["computeEnvironmentName"] for e in
             b.describe_compute_environments()["computeEnvironments"]]
    found += [q["jobQueueName"] for q in b.describe_job_queues()["jobQueues"]]
    found += [d["jobDefinitionName"] for d in b.describe_job_definitions()["jobDefinitions"]]
    found += [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    found += [r["RoleName"] for r in aws["iam"].list_roles()["Roles"]]
    found += [p["InstanceProfileName"] for p in
              aws["iam"].list_instance_profiles()["InstanceProfiles"]]
    found += [g["GroupName"] for g in aws["ec2"].describe_security_groups()["SecurityGroups"]
              if g["GroupName"] != "default"]
    found += [t["LaunchTemplateName"] for t in
              aws["ec2"].describe_launch_templates()["LaunchTemplates"]]
    found += [b["Name"] for b in aws["s3"].list_buckets()["Buckets"] if b["Name"] not in theirs]
    found += [p.name for p in (tmp_path / "state").rglob("*.json")]
    return found


def refused(capsys, aws, tmp_path, *args: str, theirs: tuple[str, ...] = ()) -> str:
    code, err = batch(capsys, *args)
    assert code == EXIT_BAD_INPUT, err
    assert err.count("\n") == 1 and err.startswith("sdtui: error: "), err  # one line
    assert " — " in err  # with its fix
    assert created(aws, tmp_path, theirs) == []
    return err


def test_no_prompts(capsys, aws, tmp_path, local_model):
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model))
    assert "no prompts given" in err and "--prompt-file" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model),
                  "--prompt-file", str(empty))
    assert "has no prompts" in err


def test_zero_gpus(capsys, aws, tmp_path, local_model, prompts):
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model),
                  "--prompt-file", str(prompts), "--gpus", "0")
    assert "--gpus 0 is out of range" in err


@pytest.mark.parametrize("spot, code, name", [
    (False, "L-DB2E81BA", "Running On-Demand G and VT instances"),
    (True, "L-3819A6DF", "All G and VT Spot Instance Requests"),
])
def test_more_gpus_than_the_quota(capsys, aws, tmp_path, local_model, prompts, quotas,
                                  spot, code, name):
    quotas.values[code] = 8.0
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model),
                  "--prompt-file", str(prompts), "--gpus", "4",
                  *(["--spot"] if spot else []))
    assert f"4 GPU(s) need 16 vCPUs but the quota {code} ({name}) in us-east-1 is 8" in err
    assert "pass --gpus 2" in err
    assert (f"aws service-quotas request-service-quota-increase --region us-east-1 "
            f"--service-code ec2 --quota-code {code} --desired-value 16") in err
    assert ("GetServiceQuota", code) in quotas.calls


def test_a_new_account_with_no_gpu_quota(capsys, aws, tmp_path, local_model, prompts, quotas):
    quotas.values["L-DB2E81BA"] = 0.0
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model),
                  "--prompt-file", str(prompts))
    assert "is 0" in err and "--gpus" not in err.split(" — ")[1]
    assert "--desired-value 4" in err


def test_a_bucket_that_is_not_ours(capsys, aws, tmp_path, local_model, prompts):
    aws["s3"].create_bucket(Bucket=BUCKET)
    aws["s3"].put_bucket_tagging(Bucket=BUCKET,
                                 Tagging={"TagSet": [{"Key": "team", "Value": "data"}]})
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model),
                  "--prompt-file", str(prompts), theirs=(BUCKET,))
    assert f"bucket {BUCKET!r} exists but is not sdtui's" in err
    # and it was left exactly as it was
    assert aws["s3"].get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [
        {"Key": "team", "Value": "data"}]
    assert aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


def test_a_model_missing_from_the_bucket(capsys, aws, tmp_path, prompts):
    aws["s3"].create_bucket(Bucket=BUCKET)
    aws["s3"].put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [
        {"Key": "sdtui:deployment", "Value": "aws"}]})  # Option A's
    aws["s3"].put_object(Bucket=BUCKET, Key="other.ckpt", Body=b"x")
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", "sd-v1-4.ckpt",
                  "--prompt-file", str(prompts), theirs=(BUCKET,))
    assert f"model sd-v1-4.ckpt is not in s3://{BUCKET}" in err
    assert aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"] == 1  # no runs/ written


def test_a_model_key_and_no_bucket_yet(capsys, aws, tmp_path, prompts):
    err = refused(capsys, aws, tmp_path, "--bucket", "sdtui-batch-nobody", "--model",
                  "sd-v1-4.ckpt", "--prompt-file", str(prompts))
    assert "model sd-v1-4.ckpt is not in s3://sdtui-batch-nobody" in err


@pytest.mark.parametrize("flags, problem", [
    (["--steps", "0"], "steps must be from 1 to 150"),
    (["--instance-type", "g4dn.2xlarge"], "cannot run one shard per GPU"),
    (["--model", "/nowhere/sd.ckpt"], "does not exist"),
])
def test_other_bad_flags(capsys, aws, tmp_path, local_model, prompts, flags, problem):
    model = [] if "--model" in flags else ["--model", str(local_model)]
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, *model,
                  "--prompt-file", str(prompts), *flags)
    assert problem in err


@pytest.mark.parametrize("flags", [["--cancel", "20250601-120000-abcd"], ["--estimate"],
                                   ["--gpus", "2"], ["--status", "20250601-120000-abcd"]])
def test_scale_out_flags_without_the_scale_out(capsys, aws, tmp_path, flags):
    code = main(["--no-ui", "--option", "local", *flags])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "applies to the scale-out only" in err
    assert "--option batch" in err and err.count("\n") == 1


@pytest.mark.parametrize("region, partition", [("cn-north-1", "aws-cn"),
                                               ("us-gov-west-1", "aws-us-gov")])
def test_a_region_outside_the_aws_partition(capsys, aws, tmp_path, local_model, prompts,
                                            region, partition):
    """The scale-out writes every ARN for the `aws` partition (the README says so), so the
    others are refused before anything is made, as for Option A."""
    err = refused(capsys, aws, tmp_path, "--bucket", BUCKET, "--model", str(local_model),
                  "--prompt-file", str(prompts), "--region", region)
    assert f"region {region!r} is in the {partition} partition" in err
    assert "us-east-1" in err.split(" — ")[1]
