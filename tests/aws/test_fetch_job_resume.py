"""The scale-out's fetch job keeps the file it is fetching in the bucket as it grows
(sdtui.fetch.bucket_partial), because its scratch disk goes with it: the next job, on a fresh
disk, puts it back and resumes with a Range request instead of starting over. Run as Batch runs
it (`python -m sdtui.worker fetch-to-bucket`, here on moto S3 and the Hub stand-in, each job
with a scratch disk of its own), stopped as Batch stops a job (SIGTERM, with the hub stalled),
and with a kept span gone bad (the checksum refuses it, and it is never put back)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from local_cli import wait_for

from sdtui.fetch import bucket_partial, download
from sdtui.fetch.plan import RemoteFile, Resolved
from tests.fetch.conftest import hub  # noqa: F401 (a fixture)
from tests.fetch.standin import COMMIT, Hub

BUCKET = "sdtui-fetch-resume"
SIZE = 3 * 1024 * 1024 + 321
# Where the hub stalls: on a read boundary of the job's, which it then holds exactly these bytes.
HALF = 24 * download.CHUNK
JOB, STATE = "fetch/f1/job.json", "fetch/f1/progress.json"


def _job(s3, hub: Hub, tmp_path: Path) -> tuple[bytes, RemoteFile]:  # noqa: F811
    data = random.Random(7).randbytes(SIZE)
    (tmp_path / "big.safetensors").write_bytes(data)
    hub.add_repo("org/big", {"big.safetensors": tmp_path / "big.safetensors"})
    f = RemoteFile(url=f"{hub.url}/org/big/resolve/{COMMIT}/big.safetensors",
                   dest="big.safetensors", size=SIZE, sha256=hashlib.sha256(data).hexdigest())
    resolved = Resolved("hf:org/big/big.safetensors", f"hf:org/big/big.safetensors@{COMMIT}",
                        f"hf:org/big/big.safetensors@{COMMIT}", f"hf/org/big/{COMMIT}",
                        "big.safetensors", (f,))
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=JOB, Body=json.dumps(
        {"prefix": "models/", "sets": [resolved.to_json()]}))
    return data, f


def _start(scratch: Path) -> subprocess.Popen:
    """One job, with a scratch disk of its own (a fresh one each time, as Batch gives)."""
    scratch.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "sdtui.worker", "fetch-to-bucket", "--bucket", BUCKET,
         "--job", JOB, "--progress", STATE], env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kept(s3, f: RemoteFile) -> dict[str, int]:
    return {o["Key"]: o["Size"] for o in s3.list_objects_v2(
        Bucket=BUCKET, Prefix=bucket_partial.prefix_of(f)).get("Contents", [])}


def _state(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=STATE)["Body"].read())


def test_a_job_stopped_half_way_is_resumed_by_the_next_job_on_a_fresh_disk(
        aws, hub: Hub, tmp_path: Path) -> None:  # noqa: F811
    s3 = aws["s3"]
    data, f = _job(s3, hub, tmp_path)
    part = tmp_path / "job1" / "sdtui-fetch" / ".staging" / f"{f.sha256}.part"
    hub.pause_at = HALF
    first = _start(tmp_path / "job1")
    try:
        wait_for(lambda: part.exists() and part.stat().st_size == HALF,
                 unless=lambda: first.poll() is not None, timeout=60)
        # The hub stalls mid-body; Batch stops the job (TerminateJob sends SIGTERM first).
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
        hub.pause_at = None
        hub.resume.set()
    assert first.returncode == 1, err[-2000:]
    state = _state(s3)
    assert (state["state"], state["message"], state["fix"]) == (
        "failed", "the fetch job was stopped", "run sdtui again: it resumes")
    # What it had is in the bucket, where the next job finds it: every byte it got, from 0.
    kept = _kept(s3, f)
    assert sum(kept.values()) == HALF and bucket_partial.span_key(f, 0) in kept
    assert hub.served_of(data) == HALF

    second = _start(tmp_path / "job2")  # a new disk: nothing of the first job's is on it
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    # Resumed, not restarted: the hub sent each byte once in all.
    assert hub.served_of(data) == SIZE
    key = f"models/hf/org/big/{COMMIT}/big.safetensors"
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Metadata"]["sha256"] == f.sha256 and got["Body"].read() == data
    assert _kept(s3, f) == {}  # the spans go once the file is in models/
    assert _state(s3)["state"] == "done"


def test_a_kept_span_gone_bad_is_refused_by_the_checksum_and_never_put_back(
        aws, hub: Hub, tmp_path: Path) -> None:  # noqa: F811
    s3 = aws["s3"]
    data, f = _job(s3, hub, tmp_path)
    bad = bytearray(data[:SIZE // 3])
    bad[100] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=bucket_partial.span_key(f, 0), Body=bytes(bad))
    first = _start(tmp_path / "job1")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1, err[-2000:]
    state = _state(s3)
    assert "big.safetensors arrived corrupt" in state["message"], state
    assert hub.served_of(data) == SIZE - SIZE // 3  # the rest of it, resumed after the span
    assert _kept(s3, f) == {}  # the bad span is gone with the file
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="models/")

    second = _start(tmp_path / "job2")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert s3.get_object(Bucket=BUCKET, Key=f"models/hf/org/big/{COMMIT}/big.safetensors")[
        "Body"].read() == data


def test_a_span_is_kept_while_the_hub_stalls_so_a_job_killed_outright_loses_little(
        aws, hub: Hub, tmp_path: Path) -> None:  # noqa: F811
    """SIGKILL gives no time to keep anything: what the job had SPAN_S after it stalled is in the
    bucket already (moto's Batch stops a job so; the real one after its stop timeout)."""
    s3 = aws["s3"]
    data, f = _job(s3, hub, tmp_path)
    hub.pause_at = HALF
    first = _start(tmp_path / "job1")
    try:
        wait_for(lambda: sum(_kept(s3, f).values()) == HALF,
                 unless=lambda: first.poll() is not None,
                 timeout=bucket_partial.SPAN_S + 60)
        first.kill()
        first.communicate(timeout=60)
    finally:
        first.kill()
        hub.pause_at = None
        hub.resume.set()
    second = _start(tmp_path / "job2")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert hub.served_of(data) == SIZE
    assert _kept(s3, f) == {}

