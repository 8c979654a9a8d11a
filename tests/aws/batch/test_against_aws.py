"""The scale-out's provisioning against what AWS does and moto does not: a compute environment
that goes INVALID (the status reason shown, the one this ledger made deleted and made again), a
launch-template change reaching an existing environment (an infrastructure update), and only
the default VPC's default subnets. Batch calls go through batch_front.py, which checks each
with botocore's validator and answers as AWS does; everything else is moto over HTTP. The steps
run for real, but the image step (a Docker build, covered by the end-to-end tests)."""

from __future__ import annotations

import json

import pytest

from sdtui.deploy.base import StepFinished, run_steps
from sdtui.deploy.batch import compute
from sdtui.deploy.batch.deployment import BatchDeployment
from sdtui.deploy.batch.settings import BatchSettings
from sdtui.errors import DeploymentError
from sdtui.ledger import Ledger

from ..conftest import serve_moto, write_safetensors
from .batch_front import BatchFront

NAME = "against"
ENVIRONMENT = f"sdtui-{NAME}"
PROPAGATION = ("CLIENT_ERROR - Invalid IamInstanceProfile: arn:aws:iam::123456789012:"
               f"instance-profile/sdtui-{NAME}-instance")


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """moto of its own with AWS managed policies loaded (the instance role attaches the ECS
    one), as the end-to-end test runs it."""
    yield from serve_moto(tmp_path_factory, {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"})


@pytest.fixture(scope="module")
def front(moto_url):
    server = BatchFront(moto_url)
    yield server
    server.close()


@pytest.fixture
def batch_front(front, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", front.url)
    front.reset()
    return front


@pytest.fixture
def model(tmp_path):
    (tmp_path / "m").mkdir()
    return write_safetensors(tmp_path / "m" / "tiny.safetensors")


def provision(model, *, volume_gb: int = 100
              ) -> tuple[BatchDeployment, list[float], dict[str, str]]:
    """The deployment's own steps but the image build; returns it, the pauses it took and
    each step's outcome."""
    pauses: list[float] = []
    deployment = BatchDeployment(BatchSettings(
        bucket=f"sdtui-{NAME}-models", region="us-east-1", name=NAME, models=[str(model)],
        gpus=2, volume_gb=volume_gb), sleep=pauses.append)
    deployment.ledger.set_params(image="123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1")
    events: list = []
    run_steps([s for s in deployment.plan() if s.name != "image"], events.append)
    return deployment, pauses, {e.step: e.outcome for e in events
                                if isinstance(e, StepFinished)}


def environment(batch_front) -> dict:
    import boto3

    return boto3.client("batch", region_name="us-east-1").describe_compute_environments(
        computeEnvironments=[ENVIRONMENT])["computeEnvironments"][0]


def test_an_environment_that_goes_invalid_is_made_again(batch_front, aws, model):
    batch_front.invalid_next[ENVIRONMENT] = [PROPAGATION]
    _deployment, pauses, finished = provision(model)
    assert len(batch_front.called("CreateComputeEnvironment")) == 2
    assert len(batch_front.called("DeleteComputeEnvironment")) == 1
    disabled = [b for b in batch_front.called("UpdateComputeEnvironment")
                if b.get("state") == "DISABLED"]
    assert len(disabled) == 1  # Batch deletes only a disabled environment
    assert pauses.count(compute.RECREATE_DELAYS_S[0]) == 1  # IAM had time to propagate
    assert environment(batch_front)["status"] == "VALID"
    assert finished["compute"] == "done" and finished["jobdef"] == "done"


def test_an_environment_that_stays_invalid_names_its_reason(batch_front, aws, model):
    batch_front.invalid_next[ENVIRONMENT] = [PROPAGATION] * 5
    with pytest.raises(DeploymentError) as failed:
        provision(model)
    assert f"compute environment {ENVIRONMENT} is INVALID: {PROPAGATION}" in str(failed.value)
    assert "run again" in failed.value.fix
    # one first try, then one more per pause, each deleting the last (never a queue made)
    assert len(batch_front.called("CreateComputeEnvironment")) == 1 + len(
        compute.RECREATE_DELAYS_S)
    assert batch_front.called("CreateJobQueue") == []


def test_one_this_ledger_did_not_make_is_left_alone(batch_front, aws, model):
    batch_front.invalid_next[ENVIRONMENT] = [PROPAGATION] * 5
    with pytest.raises(DeploymentError):
        provision(model)
    # another state dir (or a lost ledger): the tag alone does not make it ours
    Ledger.load(NAME).forget("compute_environment", ENVIRONMENT)
    before = len(batch_front.calls)
    with pytest.raises(DeploymentError) as failed:
        provision(model)
    assert PROPAGATION in str(failed.value) and "leaves it alone" in failed.value.fix
    operations = {op for op, _body in batch_front.calls[before:]}
    assert not operations & {"DeleteComputeEnvironment", "CreateComputeEnvironment",
                             "UpdateComputeEnvironment"}


def test_one_a_job_queue_uses_is_not_deleted_under_it(batch_front, aws, model):
    """Gone INVALID after the queue was made: deleting it would fail (Batch refuses while a
    queue uses it) and take queued runs with it, so the line says to tear down first."""
    provision(model)
    batch_front.go_invalid(ENVIRONMENT, "CLIENT_ERROR - Instance profile not found")
    before = len(batch_front.calls)
    with pytest.raises(DeploymentError) as failed:
        provision(model)
    assert "is INVALID: CLIENT_ERROR - Instance profile not found" in str(failed.value)
    assert "--teardown" in failed.value.fix
    operations = {op for op, _body in batch_front.calls[before:]}
    assert not operations & {"DeleteComputeEnvironment", "UpdateComputeEnvironment"}


def test_a_new_volume_size_reaches_the_environment(batch_front, aws, model):
    provision(model, volume_gb=100)
    first = environment(batch_front)["computeResources"]["launchTemplate"]
    provision(model, volume_gb=200)
    (update,) = [b for b in batch_front.called("UpdateComputeEnvironment")
                 if "computeResources" in b]
    template = update["computeResources"]["launchTemplate"]
    assert template["launchTemplateId"] == first["launchTemplateId"]
    assert int(template["version"]) == int(first["version"]) + 1  # a number, never $Latest
    assert update["updatePolicy"]["terminateJobsOnUpdate"] is False  # running shards finish
    versions = aws["ec2"].describe_launch_template_versions(
        LaunchTemplateId=template["launchTemplateId"], Versions=[template["version"]])
    disk = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["BlockDeviceMappings"]
    assert disk[0]["Ebs"]["VolumeSize"] == 200
    assert environment(batch_front)["computeResources"]["launchTemplate"] == template
    # nothing changed: no update at all
    before = len(batch_front.called("UpdateComputeEnvironment"))
    provision(model, volume_gb=200)
    assert len(batch_front.called("UpdateComputeEnvironment")) == before


def test_only_the_default_subnets_are_used(batch_front, aws, model):
    ec2 = aws["ec2"]
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    defaults = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=[
        {"Name": "default-for-az", "Values": ["true"]}])["Subnets"])
    private = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="172.31.200.0/24")["Subnet"]
    try:
        provision(model)
        used = environment(batch_front)["computeResources"]["subnets"]
        assert private["SubnetId"] not in used and sorted(used) == defaults
    finally:
        ec2.delete_subnet(SubnetId=private["SubnetId"])


def test_an_environment_on_a_private_subnet_is_moved_off_it(batch_front, aws, model):
    """One made before this rule (every subnet of the default VPC) gets an infrastructure
    update to the default subnets."""
    import boto3

    batch = boto3.client("batch", region_name="us-east-1")
    ec2 = aws["ec2"]
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    private = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="172.31.201.0/24")["Subnet"]
    try:
        deployment, _, _ = provision(model)
        subnets = deployment.ledger.params["subnets"]
        batch.update_compute_environment(computeEnvironment=ENVIRONMENT, computeResources={
            "subnets": [*subnets, private["SubnetId"]]})
        batch_front.calls.clear()
        provision(model)
        (update,) = [b for b in batch_front.called("UpdateComputeEnvironment")
                     if "computeResources" in b]
        assert sorted(update["computeResources"]["subnets"]) == sorted(subnets)
        assert json.dumps(update).count("subnet-") == len(subnets)
    finally:
        ec2.delete_subnet(SubnetId=private["SubnetId"])


@pytest.fixture
def enforce_iam(moto_url):
    """From the call on, moto checks signatures and IAM policies as AWS does (its reset-auth
    API); given back to the module's next test without."""
    import urllib.request

    def set_free_calls(count: str) -> None:  # moto reads the body as one number
        urllib.request.urlopen(urllib.request.Request(
            f"{moto_url}/moto-api/reset-auth", method="POST", data=count.encode(),
            headers={"Content-Type": "text/plain"}))

    yield lambda: set_free_calls("0")
    set_free_calls("inf")


def test_a_shard_reads_and_writes_its_own_run_only(batch_front, aws, model, tmp_path,
                                                   enforce_iam):
    """Each run's job runs under a role that reaches that run's prompts and outputs and no
    other run's (checked by moto's IAM enforcement with the role's own credentials)."""
    import boto3
    from botocore.exceptions import ClientError

    from sdtui import bucket_layout
    from sdtui.deploy.batch.requests import run_lines

    deployment, _, _ = provision(model)
    mine = deployment.submit(run_lines(["a red fox"], {}), tmp_path / "out")
    other = deployment.submit(run_lines(["a lighthouse"], {}), tmp_path / "out")
    batch = boto3.client("batch", region_name="us-east-1")
    job = batch.describe_jobs(jobs=[mine["job_id"]])["jobs"][0]
    definition = batch.describe_job_definitions(
        jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
    role = definition["containerProperties"]["jobRoleArn"]
    granted = aws["sts"].assume_role(RoleArn=role, RoleSessionName="shard")["Credentials"]
    shard = boto3.client("s3", region_name="us-east-1",
                         aws_access_key_id=granted["AccessKeyId"],
                         aws_secret_access_key=granted["SecretAccessKey"],
                         aws_session_token=granted["SessionToken"])
    bucket = deployment.settings.bucket
    enforce_iam()

    def denied(call, **params) -> bool:
        try:
            call(Bucket=bucket, **params)
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "AccessDenied"
        return False

    shard.get_object(Bucket=bucket, Key=bucket_layout.prompts_key(mine["run"]))
    shard.put_object(Bucket=bucket, Key=bucket_layout.image_key(mine["run"], 0, 0), Body=b"x")
    shard.get_object(Bucket=bucket, Key=model.name)  # the model, as every shard
    assert denied(shard.get_object, Key=bucket_layout.prompts_key(other["run"]))
    assert denied(shard.put_object, Key=bucket_layout.image_key(other["run"], 0, 0), Body=b"x")
    assert denied(shard.get_object, Key=bucket_layout.prompts_key("20250101-000000-0000"))


def test_a_runs_role_and_definition_go_when_the_run_ends(batch_front, aws, model, tmp_path):
    import time

    import boto3

    from sdtui.deploy.batch import names
    from sdtui.deploy.batch.requests import run_lines

    deployment, _, _ = provision(model)
    record = deployment.submit(run_lines(["a red fox"], {}), tmp_path / "out")
    role = names.run_role(NAME, record["run"])
    assert aws["iam"].get_role(RoleName=role)["Role"]["Path"] == f"/sdtui/{NAME}/runs/"
    deployment.cancel(record)
    deadline = time.monotonic() + 120
    while not deployment.run_status(record).finished:
        assert time.monotonic() < deadline, "the cancelled run never ended"
        time.sleep(0.5)
    assert aws["iam"].list_roles(PathPrefix=f"/sdtui/{NAME}/runs/")["Roles"] == []
    batch = boto3.client("batch", region_name="us-east-1")
    assert batch.describe_job_definitions(
        jobDefinitionName=names.run_job_definition(NAME, record["run"]),
        status="ACTIVE")["jobDefinitions"] == []
    assert [e.id for e in Ledger.load(NAME).resources("role")] == [
        names.job_role(NAME), names.instance_role(NAME)]
