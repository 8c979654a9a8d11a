"""A run: its resolved requests uploaded, one array job of W shards submitted (a plain job for
W = 1), its progress per shard read back from Batch and the bucket, its finished images
downloaded into the outputs dir, and its cancel."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sdtui import bucket_layout, protocol, sharding
from sdtui.deploy.aws.pricing import MINIMUM_BILLED_S
from sdtui.deploy.batch import names
from sdtui.deploy.batch.models import ModelFiles
from sdtui.errors import DeploymentError
from sdtui.paths import state_dir

RUN_TAG = "sdtui:run"
FINAL = {"SUCCEEDED", "FAILED"}
FORGOTTEN_AFTER_S = 3600  # a run whose jobs Batch does not list an hour on is over
MAX_INDEX_BYTES = 1 << 20
MAX_PNG_BYTES = 256 << 20
# Test-only settings the shards inherit from the client (see the README).
FORWARDED_TEST_SETTINGS = ("SDTUI_TEST_ARRAY_INDEX_FROM_JOB_ID",)
TEST_CREDENTIALS = "SDTUI_TEST_SHARD_CREDENTIALS"


@dataclass
class ShardStatus:
    index: int
    job_id: str
    status: str
    done: int
    total: int
    started_ms: int | None = None
    stopped_ms: int | None = None
    reason: str = ""
    attempts: int = 0


@dataclass
class RunStatus:
    run: str
    job_id: str
    state: str  # "waiting", "running", "succeeded", "failed", "cancelled"
    done: int
    total: int
    shards: list[ShardStatus] = field(default_factory=list)
    cost_so_far_usd: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state in {"succeeded", "failed", "cancelled"}


# --- submitting ----------------------------------------------------------------------------


def keep_inputs(out_dir: Path, lines: list[dict[str, Any]]) -> None:
    """The run's input images (an init image, a mask), stored once in the outputs dir now: the
    shards' images refer to them by sha256, as every saved image does."""
    from sdtui.outputs import store_inputs

    seen: set[tuple] = set()
    for line in lines:
        inputs = {k: line[k] for k in protocol.INPUT_IMAGE_FIELDS if line.get(k)}
        key = tuple(sorted(inputs.items()))  # the lines share one string: hashed once
        if inputs and key not in seen:
            seen.add(key)
            store_inputs(out_dir, inputs)


def upload_prompts(s3, bucket: str, run: str, lines: list[dict[str, Any]]) -> None:
    s3.put_object(Bucket=bucket, Key=bucket_layout.prompts_key(run),
                  Body=sharding.encode_lines(lines), ContentType="application/x-ndjson")


def child_command(*, bucket: str, region: str, run: str, shards: int,
                  files: ModelFiles) -> list[str]:
    """Arguments after the image's entry point (python3 -m sdtui.worker)."""
    command = ["batch", "--bucket", bucket, "--region", region, "--run", run,
               "--shards", str(shards), "--model", files.primary]
    for key in files.keys:
        command += ["--file", key]
    return command


def child_environment() -> list[dict[str, str]]:
    """Nothing on real AWS: the job role and the region come with the container. Tests: the
    endpoint (AWS_ENDPOINT_URL, moto), the static keys of SDTUI_TEST_SHARD_CREDENTIALS (moto's
    Batch has no task roles; the caller's own keys are never passed) and the test settings the
    shards read."""
    env = {k: os.environ[k] for k in FORWARDED_TEST_SETTINGS if os.environ.get(k)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    key, _, secret = os.environ.get(TEST_CREDENTIALS, "").partition(":")
    if key and secret:
        env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def submit(batch, name: str, run: str, *, definition: str, shards: int, command: list[str],
           environment: list[dict[str, str]], attempt_s: int) -> str:
    """One array job of `shards` children (a plain job when there is one) on the run's own
    job definition; returns its id."""
    params: dict[str, Any] = {
        "jobName": names.job_name(name, run),
        "jobQueue": names.job_queue(name),
        "jobDefinition": definition,
        "containerOverrides": {"command": command, "environment": environment},
        "timeout": {"attemptDurationSeconds": attempt_s},
        "propagateTags": True,
        "tags": {**names.tag_dict(name), RUN_TAG: run},
    }
    if shards > 1:
        params["arrayProperties"] = {"size": shards}
    return batch.submit_job(**params)["jobId"]


# --- progress ------------------------------------------------------------------------------


def _describe(batch, job_ids: list[str]) -> list[dict]:
    found = []
    for start in range(0, len(job_ids), 100):  # DescribeJobs takes 100 ids at a time
        found += batch.describe_jobs(jobs=job_ids[start:start + 100])["jobs"]
    return found


def shard_jobs(batch, job_id: str, shards: int) -> dict[int, dict]:
    """Each shard's job, by index. A child's id is the parent's with ":<index>" appended."""
    if shards == 1:
        return {0: job} if (job := next(iter(_describe(batch, [job_id])), None)) else {}
    ids = [f"{job_id}:{i}" for i in range(shards)]
    return {int(j["jobId"].rsplit(":", 1)[1]): j for j in _describe(batch, ids)
            if j["jobId"].startswith(f"{job_id}:")}


def run_status(batch, s3, bucket: str, run: dict[str, Any], *, boot_s: float,
               now_ms: int | None = None) -> RunStatus:
    """`run` is the ledger's record of it (job_id, shards, counts, hourly_usd, cancelled)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    shards, counts = int(run["shards"]), [int(c) for c in run["counts"]]
    finished = bucket_layout.finished_images(run["run"], list_keys(
        s3, bucket, bucket_layout.out_prefix(run["run"])))
    jobs = shard_jobs(batch, run["job_id"], shards)
    status = RunStatus(run["run"], run["job_id"], "waiting", len(finished), sum(counts))
    billed_s = 0.0
    for index in range(shards):
        numbers = sharding.shard_lines(len(counts), index, shards)
        mine = [(n, j) for n in numbers for j in range(counts[n])]
        job = jobs.get(index, {})
        shard = ShardStatus(index, job.get("jobId", f"{run['job_id']}:{index}"),
                            job.get("status", "UNKNOWN"),
                            sum(1 for image in mine if image in finished), len(mine),
                            job.get("startedAt"), job.get("stoppedAt"),
                            job.get("statusReason", ""), len(job.get("attempts", [])))
        status.shards.append(shard)
        if shard.started_ms:
            running = ((shard.stopped_ms or now_ms) - shard.started_ms) / 1000
            billed_s += max(boot_s + running, MINIMUM_BILLED_S)
    status.cost_so_far_usd = float(run.get("hourly_usd") or 0) * billed_s / 3600
    states = {s.status for s in status.shards}
    if not jobs:  # not listed yet, or no longer (Batch forgets ended jobs after some days)
        if status.done == status.total:
            status.state = "succeeded"
        elif run.get("cancelled") or _age_s(run, now_ms) > FORGOTTEN_AFTER_S:
            status.state = "cancelled" if run.get("cancelled") else "failed"
    elif run.get("cancelled") and states <= FINAL:
        status.state = "cancelled"
    elif jobs and states == {"SUCCEEDED"}:
        status.state = "succeeded"
    elif jobs and states <= FINAL:
        status.state = "failed"
    elif states & {"STARTING", "RUNNING", "SUCCEEDED", "FAILED"}:
        status.state = "running"
    return status


def _age_s(run: dict[str, Any], now_ms: int) -> float:
    try:
        submitted = datetime.fromisoformat(run["submitted"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0
    return now_ms / 1000 - submitted


def cancel(batch, job_id: str, shards: int, reason: str) -> list[str]:
    """Terminate the job (a parent terminates its children on AWS), and each unfinished
    child as well; returns the ids told to stop."""
    told = []
    for _index, job in sorted(shard_jobs(batch, job_id, shards).items()):
        if job["status"] not in FINAL:
            batch.terminate_job(jobId=job["jobId"], reason=reason)
            told.append(job["jobId"])
    if shards > 1:
        batch.terminate_job(jobId=job_id, reason=reason)
    return told


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


# --- collecting the images -----------------------------------------------------------------


def _downloaded_path(name: str, run: str) -> Path:
    return state_dir() / "batch-runs" / name / f"{run}.downloaded"


def downloaded(name: str, run: str) -> set[tuple[int, int]]:
    try:
        text = _downloaded_path(name, run).read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    found = set()
    for line in text.split():
        with contextlib.suppress(ValueError):
            number, image = line.split("-")
            found.add((int(number), int(image)))
    return found


def _mark_downloaded(name: str, run: str, image: tuple[int, int]) -> None:
    path = _downloaded_path(name, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{image[0]}-{image[1]}\n")
        out.flush()
        os.fsync(out.fileno())


@dataclass(frozen=True)
class Collected:
    path: Path
    line: int
    index: int
    record: dict[str, Any]


def collect(s3, bucket: str, name: str, run: str, out_dir: Path) -> list[Collected]:
    """Download every finished image not downloaded yet, saved like every other image (its
    metadata kept, one index line), in line order."""
    from sdtui.outputs import save_image

    have = downloaded(name, run)
    finished = bucket_layout.finished_images(run, list_keys(
        s3, bucket, bucket_layout.out_prefix(run)))
    saved = []
    for line, index in sorted(finished - have):
        record = json.loads(_read(s3, bucket, bucket_layout.index_key(run, line, index),
                                  MAX_INDEX_BYTES))
        png = _read(s3, bucket, bucket_layout.image_key(run, line, index), MAX_PNG_BYTES)
        path = save_image(out_dir, png, record["params"])
        _mark_downloaded(name, run, (line, index))
        saved.append(Collected(path, line, index, record))
    return saved


def _read(s3, bucket: str, key: str, limit: int) -> bytes:
    reply = s3.get_object(Bucket=bucket, Key=key)
    if reply["ContentLength"] > limit:
        raise DeploymentError(f"s3://{bucket}/{key} is larger than {limit >> 20} MiB",
                              fix="check what wrote it; sdtui's shards never do")
    return reply["Body"].read()

