"""The scale-out's fetch job (`python -m sdtui.worker fetch-to-bucket`, sdtui.fetch.to_bucket's
batch_main) on moto S3 and the Hub stand-in: when a download fails, the state it leaves for the
client says what the next run does: the job's scratch disk goes with the job, yet what it fetched
is kept in the bucket (tests/aws/test_fetch_job_resume.py), so the next run resumes it."""

from __future__ import annotations

import json

from sdtui.fetch import to_bucket
from sdtui.fetch.plan import RemoteFile, Resolved
from tests.fetch.conftest import hub  # noqa: F401 (a fixture)
from tests.fetch.standin import Hub

BUCKET = "sdtui-fetch-state"


def test_a_failed_download_in_the_job_says_the_next_run_resumes(aws, hub: Hub):  # noqa: F811
    s3 = aws["s3"]
    s3.create_bucket(Bucket=BUCKET)
    gone = RemoteFile(url=f"{hub.url}/org/gone/resolve/main/gone.safetensors",
                      dest="gone.safetensors", size=64, sha256="0" * 64)
    resolved = Resolved("hf:org/gone/gone.safetensors", "hf:org/gone/gone.safetensors@main",
                        "hf:org/gone/gone.safetensors@main", "hf/org/gone", "gone.safetensors",
                        (gone,))
    s3.put_object(Bucket=BUCKET, Key="fetch/f1/job.json",
                  Body=json.dumps({"prefix": "models/", "sets": [resolved.to_json()]}))
    code = to_bucket.batch_main(["--bucket", BUCKET, "--job", "fetch/f1/job.json",
                                 "--progress", "fetch/f1/progress.json"])
    state = json.loads(s3.get_object(Bucket=BUCKET, Key="fetch/f1/progress.json")["Body"].read())
    assert code == 1
    assert state["state"] == "failed" and "gone.safetensors failed: HTTP 401" in state["message"]
    assert state["fix"] == "retry; the partial file is kept and the next run resumes it"
    assert "models/hf/org/gone/gone.safetensors" not in [
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
