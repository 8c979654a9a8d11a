"""The scale-out's pure builders: every request they make passes botocore's own parameter
validator (the check boto3 runs before sending), and the IAM policies they write are scoped as
the README says: nothing wider."""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.validate import validate_parameters

from sdtui.deploy.aws import ecr
from sdtui.deploy.batch import compute, jobdef, launch_template, names, policies
from sdtui.deploy.batch import queue as job_queue
from sdtui.deploy.batch.models import ModelFiles
from sdtui.deploy.batch.runs import child_command

ACCOUNT, BUCKET, NAME = "123456789012", "my-sd-models", "batch"
KEYS = ["sd-v1-4.ckpt", "sd-v1-4.config/unet/config.json", "sd-v1-4.yaml", "GFPGANv1.3.pth"]
_SESSION = botocore.session.get_session()


def valid(service: str, operation: str, params: dict) -> None:
    model = _SESSION.get_service_model(service).operation_model(operation)
    validate_parameters(params, model.input_shape)  # raises ParamValidationError


def test_batch_requests_are_valid():
    env = compute.environment_params(
        NAME, instance_type="g4dn.xlarge", spot=True, shards=4, subnets=["subnet-1"],
        security_group="sg-1", instance_profile_arn="arn:aws:iam::1:instance-profile/p",
        launch_template_id="lt-1", launch_template_version=3,
        service_role_arn="arn:aws:iam::1:role/r")
    valid("batch", "CreateComputeEnvironment", env)
    resources = env["computeResources"]
    assert (resources["minvCpus"], resources["maxvCpus"]) == (0, 16)  # 4·W, none while idle
    assert resources["type"] == "SPOT" and resources["instanceTypes"] == ["g4dn.xlarge"]
    assert resources["ec2Configuration"] == [{"imageType": "ECS_AL2023_NVIDIA"}]
    assert resources["launchTemplate"] == {"launchTemplateId": "lt-1", "version": "3"}
    on_demand = compute.environment_params(
        NAME, instance_type="g4dn.xlarge", spot=False, shards=1, subnets=["s"],
        security_group="g", instance_profile_arn="p", launch_template_id="l",
        launch_template_version=1, service_role_arn="r")["computeResources"]
    assert (on_demand["type"], on_demand["maxvCpus"]) == ("EC2", 4)

    # an existing environment brought to a new template version: an infrastructure update
    found = {"computeEnvironmentArn": "arn:ce", "state": "ENABLED", "computeResources": {
        **env["computeResources"], "launchTemplate": {"launchTemplateId": "lt-1",
                                                      "version": "2"}}}
    update = compute.update_params(found, env)
    valid("batch", "UpdateComputeEnvironment", update)
    assert update["computeResources"] == {"launchTemplate": resources["launchTemplate"]}
    assert update["updatePolicy"] == {"terminateJobsOnUpdate": False,
                                      "jobExecutionTimeoutMinutes": 360}
    assert compute.update_params({**found, "computeResources": resources}, env) is None

    valid("batch", "CreateJobQueue", job_queue.queue_params(NAME, "arn:ce"))

    definition = jobdef.definition_params(NAME, image="1.dkr.ecr.us-east-1.amazonaws.com/x:1",
                                          job_role_arn="arn:aws:iam::1:role/j")
    valid("batch", "RegisterJobDefinition", definition)
    needs = {r["type"]: r["value"] for r in
             definition["containerProperties"]["resourceRequirements"]}
    assert needs == {"GPU": "1", "VCPU": "4", "MEMORY": str(jobdef.MEMORY_MIB)}
    retry = definition["retryStrategy"]["evaluateOnExit"]
    assert retry[0] == {"onStatusReason": "Host EC2*", "action": "RETRY"}  # spot reclaims
    assert retry[-1] == {"onReason": "*", "action": "EXIT"}  # everything else stops
    assert definition["timeout"]["attemptDurationSeconds"] > 0

    command = child_command(bucket=BUCKET, region="us-east-1", run="20250601-120000-abcd",
                            shards=4, files=ModelFiles("sd-v1-4.ckpt", KEYS, 1))
    valid("batch", "SubmitJob", {"jobName": names.job_name(NAME, "20250601-120000-abcd"),
                                 "jobQueue": "q", "jobDefinition": "d",
                                 "arrayProperties": {"size": 4},
                                 "containerOverrides": {"command": command}})
    assert command[:1] == ["batch"] and command.count("--file") == len(KEYS)


def test_ec2_and_ecr_requests_are_valid():
    valid("ec2", "CreateLaunchTemplate", {
        "LaunchTemplateName": names.launch_template(NAME),
        "LaunchTemplateData": launch_template.template_data(100)})
    data = launch_template.template_data(100)
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                                       "HttpEndpoint": "enabled"}
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    valid("ecr", "CreateRepository", ecr.repository_params(NAME))
    assert ecr.repository_params(NAME)["imageTagMutability"] == "IMMUTABLE"


def _statements(policy: dict) -> list[dict]:
    return policy["Statement"]


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _resources(statement: dict) -> list[str]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def _by_action(policy: dict) -> dict[str, list[str]]:
    by_action: dict[str, list[str]] = {}
    for statement in _statements(policy):
        assert statement["Effect"] == "Allow"
        for action in _actions(statement):
            by_action.setdefault(action, []).extend(_resources(statement))
    return by_action


MODEL_ARNS = [f"arn:aws:s3:::{BUCKET}/sd-v1-4.ckpt", f"arn:aws:s3:::{BUCKET}/sd-v1-4.config/*",
              f"arn:aws:s3:::{BUCKET}/sd-v1-4.yaml", f"arn:aws:s3:::{BUCKET}/GFPGANv1.3.pth"]


def test_the_job_role_reads_the_model_only():
    policy = policies.job_role_policy(BUCKET, KEYS)
    valid("iam", "PutRolePolicy", {"RoleName": names.job_role(NAME),
                                   "PolicyName": names.JOB_POLICY_NAME,
                                   "PolicyDocument": json.dumps(policy)})
    by_action = _by_action(policy)
    assert list(by_action) == ["s3:GetObject"]
    assert sorted(by_action["s3:GetObject"]) == sorted(MODEL_ARNS)


def test_a_runs_role_reaches_its_own_run_only():
    run = "20250601-120000-abcd"
    policy = policies.run_role_policy(BUCKET, KEYS, run)
    valid("iam", "PutRolePolicy", {"RoleName": names.run_role(NAME, run),
                                   "PolicyName": names.RUN_POLICY_NAME,
                                   "PolicyDocument": json.dumps(policy)})
    by_action = _by_action(policy)
    assert set(by_action) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    assert sorted(by_action["s3:GetObject"]) == sorted(
        [*MODEL_ARNS, f"arn:aws:s3:::{BUCKET}/runs/{run}/prompts.jsonl"])
    assert by_action["s3:PutObject"] == [f"arn:aws:s3:::{BUCKET}/runs/{run}/out/*"]
    assert by_action["s3:ListBucket"] == [f"arn:aws:s3:::{BUCKET}"]
    listing = next(s for s in _statements(policy) if "s3:ListBucket" in _actions(s))
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"runs/{run}/*"]}}
    # a role name fits IAM's 64 characters for the longest deployment name
    assert len(names.run_role("n" * 40, run)) <= 64
    valid("iam", "CreateRole", {"RoleName": names.run_role("n" * 40, run),
                                "Path": names.run_role_path("n" * 40),
                                "AssumeRolePolicyDocument": "{}"})


def test_the_instance_role_has_the_ecs_policy_only_and_passrole_is_scoped():
    assert policies.INSTANCE_TRUST_POLICY["Statement"] == [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    assert policies.ecs_instance_policy_arn() == \
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
    trust = policies.job_trust_policy(ACCOUNT)
    valid("iam", "CreateRole", {"RoleName": names.job_role(NAME),
                                "AssumeRolePolicyDocument": json.dumps(trust)})
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT}}

    pass_role = policies.pass_role_policy(ACCOUNT, NAME)
    valid("iam", "PutUserPolicy", {"UserName": "me", "PolicyName": "p",
                                   "PolicyDocument": json.dumps(pass_role)})
    job, instance = _statements(pass_role)
    assert _actions(job) == _actions(instance) == ["iam:PassRole"]
    assert _resources(job) == [f"arn:aws:iam::{ACCOUNT}:role/sdtui-{NAME}-job",
                               f"arn:aws:iam::{ACCOUNT}:role/sdtui/{NAME}/runs/*"]
    assert _resources(instance) == [f"arn:aws:iam::{ACCOUNT}:role/sdtui-{NAME}-instance"]
    # each role only to the services that take it (never to a Lambda, say)
    assert job["Condition"] == {"StringEquals": {"iam:PassedToService": [
        "batch.amazonaws.com", "ecs-tasks.amazonaws.com"]}}
    assert instance["Condition"] == {"StringEquals": {"iam:PassedToService": [
        "batch.amazonaws.com", "ec2.amazonaws.com"]}}


def test_every_arn_is_of_the_aws_partition_the_settings_accept():
    """Issue 9 chose the `aws` partition only: the region check refuses the others, and every
    ARN sdtui writes is of that partition."""
    from sdtui.deploy.aws import iam
    from sdtui.deploy.aws.settings import PARTITION

    text = json.dumps([policies.job_role_policy(BUCKET, KEYS),
                       policies.run_role_policy(BUCKET, KEYS, "20250601-120000-abcd"),
                       policies.pass_role_policy(ACCOUNT, NAME),
                       policies.ecs_instance_policy_arn(), iam.read_bucket_policy(BUCKET)])
    arns = [part.split('"')[0] for part in text.split('"arn:')[1:]]
    assert PARTITION == "aws" and arns and all(a.startswith("aws:") for a in arns)


def test_the_readme_shows_the_policies_the_builders_write():
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Least-privilege policies", 1)[1].split("### ", 1)[0]
    run, fetching, pass_role = (json.loads(b) for b in re.findall(r"```json\n(.*?)```",
                                                                   section, re.S))
    assert run == policies.run_role_policy(
        "BUCKET", ["sd-v1-4.ckpt", "sd-v1-4.yaml", "GFPGANv1.3.pth"], "RUN")
    from sdtui.deploy.batch import fetch

    assert fetching == fetch.fetch_role_policy("BUCKET", "FETCH", fetch.parameter_arn(
        "REGION", "ACCOUNT", fetch.parameter_name("NAME", "FETCH")), ["fetch/partial/SHA256/"])
    assert pass_role == policies.pass_role_policy("ACCOUNT", "batch")
    # no promise of other partitions (the region check refuses them)
    assert "aws-cn" not in readme.split("## Scale-out", 1)[1].split("\n## ", 1)[0]


def test_the_fetch_job_asks_for_no_gpu_and_its_role_writes_models_its_state_and_partials_only():
    from sdtui.deploy.batch import fetch

    fetch_id = "fetch-20260101-000000-abcd"
    params = fetch.definition_params(NAME, image="repo:tag", fetch=fetch_id,
                                     job_role_arn=policies.role_arn(ACCOUNT, "r"))
    valid("batch", "RegisterJobDefinition", params)
    assert "GPU" not in json.dumps(params["containerProperties"]["resourceRequirements"])
    parameter = fetch.parameter_arn("us-east-1", ACCOUNT, fetch.parameter_name(NAME, fetch_id))
    partials = [f"fetch/partial/{'a' * 64}/", f"fetch/partial/{'b' * 64}/"]
    policy = fetch.fetch_role_policy(BUCKET, fetch_id, parameter, partials)
    writes = [s for s in policy["Statement"] if "s3:PutObject" in json.dumps(s["Action"])]
    assert [s["Resource"] for s in writes] == [
        f"arn:aws:s3:::{BUCKET}/fetch/{fetch_id}/progress.json", f"arn:aws:s3:::{BUCKET}/models/*",
        [f"arn:aws:s3:::{BUCKET}/{p}*" for p in partials]]
    deletes = [s for s in policy["Statement"] if "s3:DeleteObject" in json.dumps(s["Action"])]
    assert [s["Resource"] for s in deletes] == [[f"arn:aws:s3:::{BUCKET}/{p}*" for p in partials]]
    assert [s["Resource"] for s in policy["Statement"] if "ssm:" in json.dumps(s)] == [parameter]
    assert "ssm:" not in json.dumps(fetch.fetch_role_policy(BUCKET, fetch_id, None))


@pytest.mark.parametrize(("model", "fetched"), [
    ("sd15", True), ("hf:org/repo", True), ("civitai:5", True), ("sd35-medium@abc", True),
    ("tiny-sd", False), ("sd15/", False), ("sd-v1-4.ckpt", False), ("models/hf/o/r/c/m", False),
])
def test_a_bare_name_is_fetched_only_when_the_catalogue_has_it(model: str, fetched: bool):
    from sdtui.deploy.batch.settings import BatchSettings

    assert BatchSettings(bucket=BUCKET, models=[model]).names_a_fetch(model) is fetched
