"""The scale-out with a model named by reference, on moto's Batch (which runs the job's container
from the worker image on this machine's engine) and the Hugging Face stand-in, through the real
command: the `fetch` step's one-shot job fills the bucket's `models/` from the hub (with a LoRA
named by `--lora-file` in the `loras/` folder beside the model, where the shards find it), this
machine fetches none of the model's bytes, and shows the job's bytes, rate and ETA; the job's
role may write `models/` and read the tokens only while the job runs, and the token is in no job
definition, job, container configuration, log or ledger. A job that fails ends the command with
its own line and fix; Ctrl-C terminates it; either way what it had for its length is gone, and
the next run completes it. A later provision fetches nothing: the bucket holds that sha256.

The job and this machine both reach the stand-in from 127.0.0.1: it tells them apart by
User-Agent (the job sends sdtui.fetch.to_bucket.AGENT)."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from local_cli import events, step_outcomes, wait_for
from PIL import Image

from sdtui.deploy.aws.naming import FETCH_POLICY_NAME
from sdtui.deploy.batch import fetch, names, policies
from sdtui.deploy.batch.deployment import BatchDeployment
from sdtui.deploy.batch.settings import BatchSettings
from sdtui.errors import EXIT_DEPLOYMENT, EXIT_INTERRUPTED
from sdtui.fetch import bucket_partial, download
from sdtui.fetch.plan import RemoteFile
from sdtui.fetch.to_bucket import AGENT
from sdtui.ledger import Ledger
from tests.fetch.conftest import checkpoint_files, hub  # noqa: F401 (a fixture)
from tests.fetch.standin import COMMIT, Hub

from .test_end_to_end import moto_url, tagged_leftovers, wait_until  # noqa: F401 (a fixture)

REPO, FILE = "org/gated-tiny", "tiny.safetensors"


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


def fetch_left(aws, batch, name: str, bucket: str) -> list[str]:
    """What a fetch job makes for its length only, still there: its role, its tokens'
    parameter, its job definition, its objects under fetch/, and the ledger's record of any."""
    left = [*fetch_roles(aws["iam"], name), *parameters(aws["ssm"], name)]
    left += [d["jobDefinitionName"] for d in batch.describe_job_definitions(
        status="ACTIVE")["jobDefinitions"] if d["jobDefinitionName"].startswith(
        f"sdtui-{name}-fetch-")]
    left += [o["Key"] for o in aws["s3"].list_objects_v2(
        Bucket=bucket, Prefix=fetch.FETCH_PREFIX).get("Contents", [])]
    ledger = Ledger.load(name)
    left += [f"ledger: {e.kind} {e.id}" for e in (ledger.resources() if ledger else [])
             if e.kind == "parameter" or str(e.meta.get("run", "")).startswith("fetch-")]
    return left


def kept(s3, bucket: str) -> int:
    """The bytes fetch jobs keep of the files they were fetching (bucket_partial)."""
    return sum(o["Size"] for o in s3.list_objects_v2(
        Bucket=bucket, Prefix=bucket_partial.PREFIX).get("Contents", []))


def collected(proc: subprocess.Popen) -> list[dict]:
    """The --json events of a running sdtui, gathered as they arrive."""
    seen: list[dict] = []

    def read() -> None:
        assert proc.stdout is not None
        seen.extend(json.loads(line) for line in proc.stdout if line.startswith("{"))

    threading.Thread(target=read, daemon=True).start()
    return seen


@pytest.mark.docker
@pytest.mark.slow
def test_the_scale_out_fetches_by_name_into_the_bucket_through_failure_and_ctrl_c(
        worker_image, docker_client, aws, tmp_path: Path, monkeypatch, tiny_models,
        hub: Hub) -> None:  # noqa: F811
    """The real command, three times: the job fails on the Hub's 403 (one line with the job's
    reason and fix, exit 3), then Ctrl-C while it runs, held at half way (the job terminated,
    exit 130), each time with everything the job had for its length gone; the third run fetches
    the model and the LoRA, and a shard generates with both."""
    from conftest import OFFLINE_BASE

    from sdtui.devtools.tiny_lora import write_tiny_lora

    name = f"fetch-{uuid.uuid4().hex[:6]}"
    bucket = f"sdtui-batch-{name}"
    model = tiny_models["safetensors"]
    size, sha = model.stat().st_size, hashlib.sha256(model.read_bytes()).hexdigest()
    hub.add_repo(REPO, checkpoint_files(model, FILE), gated=True)
    lora = write_tiny_lora(tiny_models["diffusers"], tmp_path / "style.safetensors")
    hub.add_repo("org/style", {"style.safetensors": lora}, tags=["lora"])
    token = hub.token
    for var, value in (("HF_TOKEN", token), ("SDTUI_TEST_DOCKERFILE", "Dockerfile.local"),
                       ("SDTUI_TEST_ECR_PUSH", "0"),
                       ("SDTUI_TEST_SHARD_CREDENTIALS", "shard-key:shard-secret")):
        monkeypatch.setenv(var, value)
    batch, ecr = boto3.client("batch"), boto3.client("ecr")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "sdtui", "--no-ui", "--option", "batch", "--name", name,
            "--bucket", bucket, "--model", f"hf:{REPO}/{FILE}", "--base-image", OFFLINE_BASE,
            "--lora-file", "hf:org/style", "--prompt", "a lighthouse <lora:style:0.8>",
            "--steps", "2", "--width", "64", "--height", "64", "--seed", "7", "--out", str(out),
            "--json"]
    settings = BatchSettings(bucket=bucket, region="us-east-1", name=name,
                             models=[f"hf:{REPO}/{FILE}"], lora_files=["hf:org/style"],
                             dockerfile="Dockerfile.local", base_image=OFFLINE_BASE, push=False)
    key = f"models/hf/{REPO}/{COMMIT}/{FILE}"
    lora_key = f"models/hf/{REPO}/{COMMIT}/loras/style.safetensors"
    try:
        # Resolved here (the hub's API only): the run's files are the keys the job will write,
        # the LoRA's beside the model.
        planned = BatchDeployment(settings).preflight().files
        assert (planned.primary, planned.keys[-1], planned.local) == (key, lora_key, [])
        assert key in planned.keys

        # 1. The Hub refuses the job's token (403: another account's): the job fails, and the
        # command ends with its reason and fix in one line.
        hub.token = "hf_another_accounts_token"
        failed = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        hub.token = token
        assert failed.returncode == EXIT_DEPLOYMENT, failed.stderr[-3000:]
        (line,) = [x for x in failed.stderr.splitlines() if x.startswith("sdtui: error:")]
        assert re.fullmatch(rf"sdtui: error: the fetch job \S+ failed: {REPO} is a gated repo: "
                            rf".* — accept the licence at {hub.url}/{REPO} while logged in, "
                            r"then set HF_TOKEN .*", line), line
        assert fetch_left(aws, batch, name, bucket) == []

        # 2. Held at half way (on a boundary of the job's reads, so it then holds exactly these
        # bytes): what the job has while it runs; once it kept them in the bucket (a span
        # SPAN_S after the hub stalled), Ctrl-C terminates it (moto kills the container
        # outright: no time to keep anything then).
        half = size // 2 // download.CHUNK * download.CHUNK
        hub.pause_at = half
        with (tmp_path / "stderr").open("w") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
        seen = collected(proc)
        try:
            wait_for(hub.paused.is_set, unless=lambda: proc.poll() is not None, timeout=600)
            wait_for(lambda: kept(aws["s3"], bucket) == half,
                     unless=lambda: proc.poll() is not None, timeout=bucket_partial.SPAN_S + 60)
            # The job's bytes reach the client: download_progress, not only the job's state.
            wait_until(lambda: proc.poll() is not None or any(
                e["event"] == "download_progress" and e["file"] == FILE for e in seen),
                "the job's bytes as download_progress", timeout=60)
            during = fetch_roles(aws["iam"], name)
            (parameter,) = parameters(aws["ssm"], name)
            value = aws["ssm"].get_parameter(Name=parameter, WithDecryption=True)["Parameter"][
                "Value"]
            (job,) = batch.list_jobs(jobQueue=names.job_queue(name),
                                     jobStatus="RUNNING")["jobSummaryList"]
            described = batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]
            definition = batch.describe_job_definitions(
                jobDefinitions=[described["jobDefinition"]])["jobDefinitions"]
            containers = [c.attrs for c in docker_client.containers.list()
                          if c.attrs["Config"]["Cmd"][:1] == [fetch.COMMAND]]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == EXIT_INTERRUPTED
        except (AssertionError, ValueError) as exc:
            proc.kill()
            raise AssertionError(f"{exc}; the last events: {seen[-3:]}; "
                                 f"{(tmp_path / 'stderr').read_text()[-3000:]}") from None
        finally:
            hub.pause_at = None
            hub.resume.set()
        progress = [e for e in seen if e["event"] == "download_progress" and e["file"] == FILE]
        assert progress[0]["total"] == size and 0 < progress[0]["done"] <= half
        assert progress[0]["step"] == "fetch" and {"rate", "eta_s"} <= progress[0].keys()
        # During the job: one role, allowed models/, its state and that one parameter.
        (role, inline), = during.items()
        fetch_id = described["jobName"].removeprefix(f"sdtui-{name}-")
        assert role == names.run_role(name, fetch_id)
        policy = inline.pop(FETCH_POLICY_NAME)
        (keep,) = [s for s in policy["Statement"] if s["Sid"] == "KeepItsPartialFiles"]
        model_file = RemoteFile(url="", dest=FILE, size=size, sha256=sha)
        assert policies.bucket_arn(bucket, f"{bucket_partial.prefix_of(model_file)}*") in \
            keep["Resource"]
        assert (inline, {**policy, "Statement": [s for s in policy["Statement"] if s != keep]}) \
            == ({}, fetch.fetch_role_policy(
                bucket, fetch_id, fetch.parameter_arn("us-east-1", "123456789012", parameter)))
        assert described["container"]["command"][-2:] == ["--tokens", parameter]
        # The token is nowhere but in the parameter: not in the job, its definition, the
        # container's configuration, the ledger.
        assert value == json.dumps({"HF_TOKEN": hub.token})
        assert containers, "the fetch job's container was not seen"
        for seen_there in (described, definition, containers):
            assert hub.token not in json.dumps(seen_there, default=str)
        for path in (tmp_path / "state").rglob("*"):
            assert not path.is_file() or hub.token.encode() not in path.read_bytes(), path
        # After Ctrl-C: the job terminated, its container gone, nothing of it left.
        def ended() -> str | None:
            status = batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]["status"]
            return status if status in fetch.FINAL else None

        status = wait_until(ended, "the fetch job's end", timeout=60)
        assert status == "FAILED", f"the fetch job ran on after Ctrl-C: {status}"
        assert not [c for c in docker_client.containers.list()
                    if c.attrs["Config"]["Cmd"][:1] == [fetch.COMMAND]]
        # Nothing of the job is left but the half it fetched, kept for the next job.
        assert fetch_left(aws, batch, name, bucket) == [bucket_partial.span_key(model_file, 0)]

        # 3. The next run resumes the model, held again at three quarters; its client is killed
        # outright (no time to stop the job), and the job runs on.
        hub.paused.clear()
        hub.resume.clear()
        hub.pause_at = size * 3 // 4 // download.CHUNK * download.CHUNK
        killed = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(hub.paused.is_set, unless=lambda: killed.poll() is not None, timeout=600)
        finally:
            killed.kill()
            killed.wait()

        # 4. The next run follows that job to its end rather than start another, and a shard
        # generates with the model and the LoRA.
        with (tmp_path / "stderr").open("w") as stderr:
            done = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
        lines: list[str] = []
        try:
            reader = threading.Thread(target=lambda: lines.extend(done.stdout), daemon=True)
            reader.start()
            wait_until(lambda: done.poll() is not None or any(
                "left running by a client that quit" in line for line in lines),
                "the killed client's job followed", timeout=120)
        finally:
            hub.pause_at = None
            hub.resume.set()
        assert done.wait(timeout=600) == 0, (tmp_path / "stderr").read_text()[-3000:]
        reader.join(timeout=60)
        evs = events("".join(lines))
        assert step_outcomes(evs)["fetch"] == "done"
        fetch_jobs = [j for status in ("SUCCEEDED", "FAILED", "RUNNING") for j in batch.list_jobs(
            jobQueue=names.job_queue(name), jobStatus=status)["jobSummaryList"]
            if j["jobName"].startswith(f"sdtui-{name}-fetch-")]
        assert len(fetch_jobs) == 3, fetch_jobs  # the 403, the Ctrl-C, the one followed
        progress = [e for e in evs if e["event"] == "download_progress" and e["file"] == FILE]
        assert progress[-1]["done"] == progress[-1]["total"] == size
        assert fetch_left(aws, batch, name, bucket) == []
        # Resumed, not restarted: the hub sent each of the model's bytes once over both jobs.
        assert hub.served_of(model.read_bytes()) == size
        # The job fetched every byte, this machine none; the bucket holds each with its sha256.
        assert hub.served_as.get(AGENT, 0) >= size + lora.stat().st_size
        assert {a: n for a, n in hub.served_as.items() if a != AGENT and n} == {}
        assert aws["s3"].head_object(Bucket=bucket, Key=key)["Metadata"]["sha256"] == sha
        assert aws["s3"].head_object(Bucket=bucket, Key=lora_key)["Metadata"]["sha256"] == \
            hashlib.sha256(lora.read_bytes()).hexdigest()
        # The runs' job role reads the fetched model.
        assert policies.bucket_arn(bucket, "models/*") in json.dumps(aws["iam"].get_role_policy(
            RoleName=names.job_role(name), PolicyName=names.JOB_POLICY_NAME)["PolicyDocument"])
        (saved,) = out.glob("*.png")
        params = Image.open(saved).text["parameters"]
        assert f"Model hash: {sha[:10]}," in params
        assert re.search(r'Lora hashes: "?style: [0-9a-f]{12}', params), params

        # Never twice: the bucket holds those sha256s, so the step is skipped, no job submitted.
        served, again = dict(hub.served_as), []
        BatchDeployment(settings, sleep=lambda s: None).provision(again.append)
        assert {e.step: e.outcome for e in again
                if type(e).__name__ == "StepFinished"}["fetch"] == "skipped"
        assert hub.served_as == served
        assert len([j for j in batch.list_jobs(jobQueue=names.job_queue(name),
                                               jobStatus="SUCCEEDED")["jobSummaryList"]
                    if j["jobName"].startswith(f"sdtui-{name}-fetch-")]) == 1

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


def test_a_fetch_a_live_client_follows_is_left_to_it(aws) -> None:
    """Only a dead client's fetch is followed and taken back: one whose client still holds its
    lock (another terminal, still running) is refused in one line, and nothing of it touched."""
    from sdtui.client_locks import RequestLocks
    from sdtui.errors import DeploymentError

    name, fetch_id = "live", fetch.new_fetch_id()
    ledger = Ledger.open(name, "batch")
    ledger.record("role", names.run_role(name, fetch_id), run=fetch_id)
    ledger.record("parameter", fetch.parameter_name(name, fetch_id))
    live = RequestLocks(name)
    assert live.claim(fetch_id)  # the client following it, alive
    clients = fetch.Clients(boto3.Session(region_name="us-east-1").client)
    with pytest.raises(DeploymentError, match=rf"another sdtui is fetching a model for {name} "):
        fetch.finish_left(None, clients, ledger, RequestLocks(name), name=name, bucket="b",
                          sleep=lambda s: None)
    assert {e.kind for e in Ledger.load(name).resources()} == {"role", "parameter"}
    live.release(fetch_id)
