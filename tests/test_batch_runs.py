"""A run's state and cost from Batch's job descriptions and the bucket's finished images:
botocore's Stubber answers with the real responses' shapes (DescribeJobs, ListObjectsV2)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from sdtui import bucket_layout
from sdtui.deploy.batch.runs import run_status

RUN, JOB, BUCKET = "20250601-120000-abcd", "3c7f0d3e-0000-4000-8000-000000000001", "b"
NOW_MS = 1_750_000_000_000


def clients(children: list[dict], finished: list[tuple[int, int]]):
    batch = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x",
                         aws_secret_access_key="x")
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                      aws_secret_access_key="x")
    batch_stub, s3_stub = Stubber(batch), Stubber(s3)
    keys = [bucket_layout.index_key(RUN, line, index) for line, index in finished]
    s3_stub.add_response("list_objects_v2", {"Contents": [
        {"Key": k, "Size": 10} for k in keys], "IsTruncated": False, "KeyCount": len(keys)},
        {"Bucket": BUCKET, "Prefix": bucket_layout.out_prefix(RUN)})
    batch_stub.add_response("describe_jobs", {"jobs": children},
                            {"jobs": [f"{JOB}:{i}" for i in range(2)]})
    batch_stub.activate()
    s3_stub.activate()
    return batch, s3


def child(index: int, status: str, started_s: float | None = None,
          stopped_s: float | None = None, reason: str = "") -> dict:
    job = {"jobId": f"{JOB}:{index}", "jobName": f"sdtui-batch-{RUN}", "jobQueue": "q",
           "status": status, "jobDefinition": "d", "createdAt": NOW_MS - 900_000,
           "attempts": [{}] if started_s is not None else []}
    # botocore's model makes startedAt required; a job not started yet answers without a real
    # one (moto omits it): 0 stands for that, and the code reads both as "not started".
    job["startedAt"] = int(NOW_MS - started_s * 1000) if started_s is not None else 0
    if stopped_s is not None:
        job["stoppedAt"] = int(NOW_MS - stopped_s * 1000)
    if reason:
        job["statusReason"] = reason
    return job


def record(**extra) -> dict:
    return {"run": RUN, "job_id": JOB, "shards": 2, "counts": [1, 1, 1], "hourly_usd": 3.6,
            "submitted": "2025-06-15T13:00:00+00:00", **extra}


def test_every_shard_done_is_succeeded_and_billed_from_boot_with_a_minute_minimum():
    batch, s3 = clients([child(0, "SUCCEEDED", 100, 10), child(1, "SUCCEEDED", 40, 30)],
                        [(0, 0), (1, 0), (2, 0)])
    status = run_status(batch, s3, BUCKET, record(), boot_s=5, now_ms=NOW_MS)
    assert (status.state, status.done, status.total) == ("succeeded", 3, 3)
    assert [(s.index, s.done, s.total) for s in status.shards] == [(0, 2, 2), (1, 1, 1)]
    # shard 0: 5 s boot + 90 s; shard 1: 5 + 10 s, billed as 60 s; at $3.60/h = $0.001/s
    assert status.cost_so_far_usd == pytest.approx((95 + 60) * 0.001)


def test_a_failed_shard_fails_the_run_with_its_reason():
    batch, s3 = clients([child(0, "SUCCEEDED", 100, 10),
                         child(1, "FAILED", 50, 20, "Essential container in task exited")],
                        [(0, 0), (2, 0)])
    status = run_status(batch, s3, BUCKET, record(), boot_s=0, now_ms=NOW_MS)
    assert status.state == "failed" and status.shards[1].reason.startswith("Essential")


def test_running_and_waiting_shards():
    batch, s3 = clients([child(0, "RUNNING", 30), child(1, "RUNNABLE")], [(0, 0)])
    status = run_status(batch, s3, BUCKET, record(), boot_s=0, now_ms=NOW_MS)
    assert status.state == "running" and not status.finished
    assert status.cost_so_far_usd == pytest.approx(60 * 0.001)  # one shard started, 30 s


def test_cancelled_runs_and_runs_batch_forgot():
    batch, s3 = clients([child(0, "FAILED", 30, 1), child(1, "FAILED", 30, 1)], [(0, 0)])
    assert run_status(batch, s3, BUCKET, record(cancelled=True), boot_s=0,
                      now_ms=NOW_MS).state == "cancelled"
    batch, s3 = clients([], [(0, 0), (1, 0), (2, 0)])
    assert run_status(batch, s3, BUCKET, record(), boot_s=0, now_ms=NOW_MS).state == "succeeded"
    batch, s3 = clients([], [(0, 0)])
    assert run_status(batch, s3, BUCKET, record(), boot_s=0, now_ms=NOW_MS).state == "failed"
    batch, s3 = clients([], [])  # just submitted: its children are not listed yet
    fresh = record(submitted="2025-06-15T15:05:00+00:00")
    assert run_status(batch, s3, BUCKET, fresh, boot_s=0, now_ms=NOW_MS).state == "waiting"
