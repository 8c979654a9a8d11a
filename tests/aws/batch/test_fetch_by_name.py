"""The scale-out with a model named by reference, on moto's Batch (which runs the job's container
from the worker image on this machine's engine) and the Hugging Face stand-in: the `fetch` step's
one-shot job fills the bucket's `models/` from the hub, this machine fetches none of the model's
bytes, the job's role may write `models/` and read the tokens only while the job runs, and the
token is in no job definition, job, container configuration, log or ledger. A second provision
fetches nothing: the bucket holds that sha256.

The job and this machine both reach the stand-in from 127.0.0.1: it tells them apart by
User-Agent (the job sends sdtui.fetch.to_bucket.AGENT)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from local_cli import wait_for

from sdtui.deploy.aws.naming import FETCH_POLICY_NAME
from sdtui.deploy.batch import fetch, names, policies
from sdtui.deploy.batch.deployment import BatchDeployment
from sdtui.deploy.batch.settings import BatchSettings
from sdtui.fetch.to_bucket import AGENT
from tests.fetch.conftest import hub  # noqa: F401 (a fixture)
from tests.fetch.standin import COMMIT, Hub

from .test_end_to_end import moto_url, tagged_leftovers  # noqa: F401 (a fixture)

REPO, FILE = "org/gated-tiny", "tiny.safetensors"
BODY = bytes(range(256)) * 1024  # 256 KiB: paused at half way


def fetch_roles(iam, name: str) -> dict[str, dict]:
    """The fetch job's roles (under the run roles' path) and their inline policies."""
    found = {}
    for role in iam.list_roles(PathPrefix=names.run_role_path(name))["Roles"]:
        found[role["RoleName"]] = {
            p: iam.get_role_policy(RoleName=role["RoleName"], PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]}
    return found


def parameters(ssm, name: str) -> list[str]:
    return [p["Name"] for p in ssm.describe_parameters()["Parameters"]
            if p["Name"].startswith(f"/sdtui/{name}/")]


@pytest.mark.docker
@pytest.mark.slow
def test_the_scale_out_fetches_a_named_model_into_the_bucket_never_through_here(
        worker_image, docker_client, aws, tmp_path: Path, monkeypatch,
        hub: Hub) -> None:  # noqa: F811
    from conftest import OFFLINE_BASE

    name = f"fetch-{uuid.uuid4().hex[:6]}"
    bucket = f"sdtui-batch-{name}"
    hub.add_repo(REPO, {FILE: BODY}, gated=True)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setenv("SDTUI_TEST_SHARD_CREDENTIALS", "shard-key:shard-secret")
    batch, ecr = boto3.client("batch"), boto3.client("ecr")
    settings = BatchSettings(bucket=bucket, region="us-east-1", name=name,
                             models=[f"hf:{REPO}/{FILE}"], dockerfile="Dockerfile.local",
                             base_image=OFFLINE_BASE, push=False)
    key = f"models/hf/{REPO}/{COMMIT}/{FILE}"
    events: list = []
    failed: list[BaseException] = []

    def provision() -> None:
        try:
            BatchDeployment(settings, sleep=lambda s: time.sleep(0.2)).provision(events.append)
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            failed.append(exc)

    try:
        # Resolved here (the hub's API only); the run's files are the keys the job will write.
        planned = BatchDeployment(settings).preflight().files
        assert (planned.primary, planned.keys, planned.local) == (key, [key], [])
        assert fetch_roles(aws["iam"], name) == {} and parameters(aws["ssm"], name) == []

        hub.pause_at = len(BODY) // 2
        worker = threading.Thread(target=provision, daemon=True)
        worker.start()
        try:
            wait_for(hub.paused.is_set, unless=lambda: not worker.is_alive(), timeout=600)
            during = fetch_roles(aws["iam"], name)
            (parameter,) = parameters(aws["ssm"], name)
            value = aws["ssm"].get_parameter(Name=parameter, WithDecryption=True)["Parameter"][
                "Value"]
            (job,) = [j for j in batch.list_jobs(jobQueue=names.job_queue(name),
                                                  jobStatus="RUNNING")["jobSummaryList"]]
            described = batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]
            definition = batch.describe_job_definitions(
                jobDefinitions=[described["jobDefinition"]])["jobDefinitions"]
            containers = [c.attrs for c in docker_client.containers.list()
                          if c.attrs["Config"]["Cmd"][:1] == [fetch.COMMAND]]
        except AssertionError:
            raise AssertionError(f"{failed or events[-5:]}") from None
        finally:
            hub.pause_at = None
            hub.resume.set()
        worker.join(timeout=600)
        assert not failed, failed

        # During the job: one role, allowed models/ and that one parameter, nothing else.
        (role, inline), = during.items()
        fetch_id = described["jobName"].removeprefix(f"sdtui-{name}-")
        assert role == names.run_role(name, fetch_id)
        assert inline == {FETCH_POLICY_NAME: fetch.fetch_role_policy(
            bucket, fetch_id, fetch.parameter_arn("us-east-1", "123456789012", parameter))}
        assert described["container"]["command"][-2:] == ["--tokens", parameter]
        # The token is nowhere but in the parameter: not in the job, its definition, the
        # container's configuration, the ledger.
        assert value == json.dumps({"HF_TOKEN": hub.token})
        assert containers, "the fetch job's container was not seen"
        for seen in (described, definition, containers):
            assert hub.token not in json.dumps(seen, default=str)
        for path in (tmp_path / "state").rglob("*"):
            assert not path.is_file() or hub.token.encode() not in path.read_bytes(), path

        # After: the role, the parameter, the fetch's definition and its job JSON are gone.
        assert fetch_roles(aws["iam"], name) == {} and parameters(aws["ssm"], name) == []
        assert not batch.describe_job_definitions(
            jobDefinitionName=names.run_job_definition(name, fetch_id),
            status="ACTIVE")["jobDefinitions"]
        assert aws["s3"].list_objects_v2(Bucket=bucket, Prefix="fetch/")["KeyCount"] == 0
        # The job fetched every byte, this machine none; the bucket holds it with its sha256.
        assert hub.served_as.get(AGENT, 0) >= len(BODY)
        assert {a: n for a, n in hub.served_as.items() if a != AGENT and n} == {}
        head = aws["s3"].head_object(Bucket=bucket, Key=key)
        assert head["Metadata"]["sha256"] == hashlib.sha256(BODY).hexdigest()
        assert aws["s3"].get_object(Bucket=bucket, Key=key)["Body"].read() == BODY
        # The runs' job role reads the fetched model.
        assert policies.bucket_arn(bucket, "models/*") in json.dumps(aws["iam"].get_role_policy(
            RoleName=names.job_role(name), PolicyName=names.JOB_POLICY_NAME)["PolicyDocument"])
        finished = {e.step: e.outcome for e in events if type(e).__name__ == "StepFinished"}
        assert finished["fetch"] == "done"

        # Never twice: the bucket holds that sha256, so the step is skipped, no job submitted.
        served, again = dict(hub.served_as), []
        BatchDeployment(settings, sleep=lambda s: None).provision(again.append)
        assert {e.step: e.outcome for e in again
                if type(e).__name__ == "StepFinished"}["fetch"] == "skipped"
        assert hub.served_as == served
        assert len(batch.list_jobs(jobQueue=names.job_queue(name),
                                   jobStatus="SUCCEEDED")["jobSummaryList"]) == 1

        BatchDeployment(settings).teardown(lambda event: None, purge=True)
        assert tagged_leftovers(aws, batch, ecr, name) == []
    finally:
        for image in docker_client.images.list():
            for tag in image.tags:
                if f"/sdtui-{name}:" in tag:
                    docker_client.images.remove(tag)


def test_teardown_removes_what_a_crashed_fetch_left(aws) -> None:
    """A fetch cut short before its `finally` (the process killed) leaves its role and its
    tokens' parameter: the ledger recorded each before it was made, so teardown deletes them."""
    from sdtui.deploy.aws import iam
    from sdtui.deploy.aws.naming import tags
    from sdtui.deploy.batch import teardown
    from sdtui.ledger import Ledger

    name, fetch_id = "crashed", fetch.new_fetch_id()
    role, parameter = names.run_role(name, fetch_id), fetch.parameter_name(name, fetch_id)
    ledger = Ledger.open(name, "batch")
    ledger.record("role", role, run=fetch_id)
    ledger.record("parameter", parameter)
    aws["ssm"].put_parameter(Name=parameter, Type="SecureString", Value="{}")
    iam.ensure_role_named(aws["iam"], role, policies.job_trust_policy("123456789012"), "left",
                          tags(name), inline={FETCH_POLICY_NAME: fetch.fetch_role_policy(
                              "b", fetch_id, None)}, path=names.run_role_path(name))
    report = teardown.teardown(boto3.Session(region_name="us-east-1"), name, Ledger.load(name))
    assert not report.left, report.left
    assert parameters(aws["ssm"], name) == [] and fetch_roles(aws["iam"], name) == {}
    assert Ledger.load(name) is None
