"""Scale-out end to end on moto's AWS Batch, which runs each job's containers on this machine's
Docker engine: the real `sdtui` command provisions everything in moto, uploads the tiny model
and the run's prompts to moto S3, submits an array job of 2; moto starts the worker image
(Dockerfile.local's, tagged with the ECR URI: moto's ECR takes no push) and the real child reads
the model and the prompts from moto S3 and writes its PNGs back; the client downloads them.

moto's gaps, worked around here and nowhere in the product:
- it sets no AWS_BATCH_JOB_ARRAY_INDEX: SDTUI_TEST_ARRAY_INDEX_FROM_JOB_ID=1 makes the child
  read its index from its job id ("<parent>:<i>"), a test-only setting the client forwards;
- it ignores the GPU requirement: the child runs on the CPU (the worker falls back by itself);
- it starts every child at once (no capacity to wait for): nothing to do, shards are
  independent. Nor are there task roles: SDTUI_TEST_SHARD_CREDENTIALS gives the shards static
  test keys (never the caller's), and they are given the moto endpoint."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest

from sdtui.deploy.aws.naming import TAG_KEY, tag_filter
from sdtui.outputs import read_index, read_metadata

from ..conftest import serve_moto

PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "a teapot on a table"]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """moto of its own, with what its Batch needs and the other AWS tests should not pay for:
    AWS managed policies loaded (the instance role attaches the ECS one; a second more per
    reset), and job containers on the host network, so a shard reaches moto at 127.0.0.1
    exactly as the client does."""
    yield from serve_moto(tmp_path_factory, {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
                                             "MOTO_DOCKER_NETWORK_MODE": "host"})


def sdtui(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--option", "batch",
                           "--name", name, *args], capture_output=True, text=True,
                          timeout=timeout)


def tiny_checkpoint(folder: Path) -> Path:
    folder.mkdir()
    out = subprocess.run([sys.executable, "-m", "sdtui.devtools.tiny_model",
                          str(folder / "tiny.ckpt"), "--format", "ckpt"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def wait_until(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return result


def tagged_leftovers(aws, batch, ecr, name: str) -> list[str]:
    """Everything in moto that still carries the deployment's tag (or its names)."""
    ours = {TAG_KEY: name}
    left = [e["computeEnvironmentName"] for e in batch.describe_compute_environments()[
        "computeEnvironments"] if e.get("tags", {}).items() >= ours.items()]
    left += [q["jobQueueName"] for q in batch.describe_job_queues()["jobQueues"]
             if q.get("tags", {}).items() >= ours.items()]
    left += [d["jobDefinitionArn"] for d in batch.describe_job_definitions(
        status="ACTIVE")["jobDefinitions"] if d.get("tags", {}).items() >= ours.items()]
    left += [g["GroupId"] for g in aws["ec2"].describe_security_groups(
        Filters=[tag_filter(name)])["SecurityGroups"]]
    left += [t["LaunchTemplateId"] for t in aws["ec2"].describe_launch_templates(
        Filters=[tag_filter(name)])["LaunchTemplates"]]
    left += [r["RoleName"] for r in aws["iam"].list_roles()["Roles"]
             if r["RoleName"].startswith(f"sdtui-{name}")]
    left += [p["InstanceProfileName"] for p in aws["iam"].list_instance_profiles()[
        "InstanceProfiles"] if p["InstanceProfileName"].startswith(f"sdtui-{name}")]
    left += [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    return left


def bridge_moto_gaps(monkeypatch) -> None:
    """The test-only settings for moto's gaps (the module docstring says which), and the CPU
    image tagged with the ECR URI instead of pushed."""
    monkeypatch.setenv("SDTUI_TEST_DOCKERFILE", "Dockerfile.local")
    monkeypatch.setenv("SDTUI_TEST_ECR_PUSH", "0")
    monkeypatch.setenv("SDTUI_TEST_ARRAY_INDEX_FROM_JOB_ID", "1")
    monkeypatch.setenv("SDTUI_TEST_SHARD_CREDENTIALS", "shard-key:shard-secret")


def remove_ecr_tags(docker_client, name: str) -> None:
    """The ECR-URI tags the deployment's image step put on the worker image here."""
    for image in docker_client.images.list():
        for tag in image.tags:
            if f"/sdtui-{name}:" in tag:
                docker_client.images.remove(tag)


@pytest.mark.docker
@pytest.mark.slow
def test_scale_out_end_to_end(worker_image, docker_client, aws, tmp_path, monkeypatch):
    import boto3
    from conftest import OFFLINE_BASE

    name = f"e2e-{uuid.uuid4().hex[:6]}"
    bucket = f"sdtui-batch-{name}"
    batch, ecr = boto3.client("batch"), boto3.client("ecr")
    bridge_moto_gaps(monkeypatch)
    model = tiny_checkpoint(tmp_path / "models")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    common = ["--bucket", bucket, "--model", str(model), "--base-image", OFFLINE_BASE,
              "--steps", "2", "--width", "64", "--height", "64", "--out", str(out)]
    try:
        # the estimate alone creates nothing
        estimate = sdtui(name, *common, "--prompt-file", str(prompts), "--gpus", "2",
                         "--estimate")
        assert estimate.returncode == 0, estimate.stderr
        assert "GPUs" in estimate.stderr and "per image" in estimate.stderr
        assert tagged_leftovers(aws, batch, ecr, name) == []
        assert bucket not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]

        # a run of 3 prompts over 2 GPUs, watched to the end
        run = sdtui(name, *common, "--prompt-file", str(prompts), "--gpus", "2",
                    "--seed", "7")
        assert run.returncode == 0, run.stderr
        assert run.stderr.index("per image") < run.stderr.index("compute")  # estimate first
        saved = sorted(out.glob("*.png"))
        assert len(saved) == 3 and sorted(run.stdout.split()) == [str(p) for p in saved]
        by_prompt = {read_metadata(p)["params"]["prompt"]: read_metadata(p) for p in saved}
        assert sorted(by_prompt) == sorted(PROMPTS)
        from sdtui.modelfiles import sha256_file

        for meta in by_prompt.values():
            assert meta["params"]["seed"] == 7 and meta["params"]["steps"] == 2
            assert meta["params"]["model_sha256"] == sha256_file(model)  # checked on arrival
            assert "Steps: 2" in meta["parameters"] and "Seed: 7" in meta["parameters"]
        assert len(read_index(out)) == 3

        # the shards wrote their PNGs (and index lines) back to moto S3, the model came from it
        ledger = json.loads((tmp_path / "state/deployments" / f"{name}.json").read_text())
        run_id, job_id = next((r["id"], r["meta"]["job_id"]) for r in ledger["resources"]
                              if r["kind"] == "run")
        env = {e["name"]: e["value"] for e in batch.describe_jobs(jobs=[f"{job_id}:0"])[
            "jobs"][0]["container"]["environment"]}
        assert env["AWS_ACCESS_KEY_ID"] == "shard-key"  # the test keys, never the caller's
        assert "testing" not in env.values()
        keys = [o["Key"] for o in aws["s3"].list_objects_v2(
            Bucket=bucket, Prefix=f"runs/{run_id}/")["Contents"]]
        assert sorted(k.rsplit("/", 1)[1] for k in keys) == [
            "000000-00.json", "000000-00.png", "000001-00.json", "000001-00.png",
            "000002-00.json", "000002-00.png", "prompts.jsonl"]
        shard_of_line = {}
        for line in range(3):
            record = json.loads(aws["s3"].get_object(
                Bucket=bucket, Key=f"runs/{run_id}/out/{line:06d}-00.json")["Body"].read())
            shard_of_line[line] = record["shard"]
            assert record["device"] == "cpu"  # moto ignores the GPU requirement
        assert shard_of_line == {0: 0, 1: 1, 2: 0}  # lines i, i+W, ... per shard

        # --status RUN: both shards done, 3/3 images, nothing new to download
        status = sdtui(name, "--status", run_id, "--out", str(out))
        assert status.returncode == 0, status.stderr
        assert f"run {run_id}" in status.stdout and "succeeded, 3/3 images" in status.stdout
        assert "shard 0: succeeded, 2/2" in status.stdout
        assert "shard 1: succeeded, 1/1" in status.stdout
        assert len(list(out.glob("*.png"))) == 3

        # --cancel: a long run, stopped while its shards work; finished images are kept
        many = tmp_path / "many.txt"
        many.write_text("".join(f"prompt number {i}\n" for i in range(120)))
        watcher = subprocess.Popen(
            [sys.executable, "-m", "sdtui", "--no-ui", "--option", "batch", "--name", name,
             *common, "--prompt-file", str(many), "--gpus", "2", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [events.put(ln) for ln in watcher.stdout],
                         daemon=True).start()
        try:
            submitted = None
            while submitted is None:
                line = events.get(timeout=300)
                if '"event": "submitted"' in line:
                    submitted = json.loads(line)
            second = submitted["run"]
            wait_until(lambda: aws["s3"].list_objects_v2(
                Bucket=bucket, Prefix=f"runs/{second}/out/").get("KeyCount", 0) >= 2,
                "the first image of the long run")
            cancelled = sdtui(name, "--cancel", second)
            assert cancelled.returncode == 0, cancelled.stderr
            assert f"cancelled run {second}" in cancelled.stderr
            assert watcher.wait(timeout=300) == 130  # the watcher saw the run end cancelled
        finally:
            if watcher.poll() is None:
                watcher.kill()
        wait_until(lambda: not docker_client.containers.list(
            filters={"name": f"sdtui-{name}-{second}"}), "the cancelled shards to stop")
        status = sdtui(name, "--status", second, "--out", str(tmp_path / "out2"))
        assert status.returncode == 0, status.stderr
        assert "cancelled" in status.stdout
        done = int(status.stdout.split(" images")[0].rsplit(" ", 1)[1].split("/")[0])
        assert 1 <= done < 120

        # teardown: nothing tagged is left in moto, and the bucket it made is gone
        down = sdtui(name, "--teardown", "--purge-bucket")
        assert down.returncode == 0, down.stderr
        assert tagged_leftovers(aws, batch, ecr, name) == []
        assert bucket not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]
    finally:
        remove_ecr_tags(docker_client, name)


@pytest.mark.docker
def test_provisioning_twice_creates_nothing_twice_and_teardown_leaves_nothing(
        worker_image, aws, tmp_path, monkeypatch):
    """The steps alone (no run): a second provision skips or reuses everything, and teardown
    leaves nothing tagged. A same-named compute environment that is not ours is refused."""
    import boto3
    from conftest import OFFLINE_BASE

    from sdtui.deploy.batch.deployment import BatchDeployment
    from sdtui.deploy.batch.settings import BatchSettings
    from sdtui.errors import BadInput

    monkeypatch.setenv("SDTUI_TEST_ECR_PUSH", "0")
    name = f"twice-{uuid.uuid4().hex[:6]}"
    batch, ecr = boto3.client("batch"), boto3.client("ecr")
    (tmp_path / "m").mkdir()
    from ..conftest import write_safetensors

    model = write_safetensors(tmp_path / "m" / "tiny.safetensors")

    def deployment(called: str = name) -> BatchDeployment:
        return BatchDeployment(BatchSettings(
            bucket=f"sdtui-{called}", region="us-east-1", name=called, models=[str(model)],
            gpus=2, dockerfile="Dockerfile.local", base_image=OFFLINE_BASE, push=False))

    try:
        deployment().provision(lambda event: None)
        before = sorted(tagged_leftovers(aws, batch, ecr, name))
        events: list = []
        deployment().provision(events.append)
        assert sorted(tagged_leftovers(aws, batch, ecr, name)) == before
        assert len([d for d in before if ":job-definition/" in d]) == 1
        finished = {e.step: e.outcome for e in events if type(e).__name__ == "StepFinished"}
        assert finished["bucket"] == "skipped"

        other = deployment()
        other.teardown(lambda event: None, purge=True)
        assert tagged_leftovers(aws, batch, ecr, name) == []
        assert f"sdtui-{name}" not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]

        # someone else's compute environment under our name is never touched (a fresh name:
        # moto keeps a deleted resource's tags for the next one of the same ARN)
        foreign = f"theirs-{uuid.uuid4().hex[:6]}"
        role = aws["iam"].create_role(RoleName=f"other-{name}", AssumeRolePolicyDocument="{}")
        profile = aws["iam"].create_instance_profile(InstanceProfileName=f"other-{name}")
        vpc = aws["ec2"].describe_vpcs()["Vpcs"][0]["VpcId"]
        group = aws["ec2"].create_security_group(GroupName=f"other-{name}", Description="x",
                                                 VpcId=vpc)["GroupId"]
        subnet = aws["ec2"].describe_subnets()["Subnets"][0]["SubnetId"]
        batch.create_compute_environment(
            computeEnvironmentName=f"sdtui-{foreign}", type="MANAGED",
            serviceRole=role["Role"]["Arn"], computeResources={
                "type": "EC2", "minvCpus": 0, "maxvCpus": 4, "instanceTypes": ["g4dn.xlarge"],
                "subnets": [subnet], "securityGroupIds": [group],
                "instanceRole": profile["InstanceProfile"]["Arn"]})
        with pytest.raises(BadInput, match=f"compute environment sdtui-{foreign} exists and is "
                                            "not sdtui's"):
            deployment(foreign).provision(lambda event: None)
        assert tagged_leftovers(aws, batch, ecr, foreign) == []  # refused before creating
        assert f"sdtui-{foreign}" not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]
        report = deployment(foreign).teardown(lambda event: None)
        assert [r.id for r in report.left] == [f"sdtui-{foreign}"]
        assert batch.describe_compute_environments(
            computeEnvironments=[f"sdtui-{foreign}"])["computeEnvironments"]
    finally:
        engine = docker.from_env()
        for image in engine.images.list():
            for tag in image.tags:
                if f"/sdtui-{name}:" in tag or "/sdtui-theirs-" in tag:
                    engine.images.remove(tag)
