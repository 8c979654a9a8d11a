"""`python -m sdtui.fetch.to_bucket`: fetch resolved model sets straight into the model bucket,
run on the instance in the worker image (Option A's "fetch" step), so the user's machine never
carries the model's bytes.

It reads one JSON line on stdin: {"bucket", "prefix", "staging", "sets": [Resolved.to_json()],
"tokens": {"HF_TOKEN": ..., "CIVITAI_API_TOKEN": ...}}. The tokens live in this process's
memory only: never in the container's configuration, a file, or an event. Each file is staged
under `staging` (a host folder, so an interrupted fetch resumes on the next run) with
download.fetch_file's resume and checksum, then uploaded to `prefix + root/dest` with its sha256
in the object's metadata. A key whose object already carries that checksum is skipped.

It writes JSON lines on stdout: `download_progress` (file, done, total, rate, eta_s), `log`
(message), then `done` (fetched, skipped, bytes) or `error` (message, fix).

`python -m sdtui.worker fetch-to-bucket --bucket B --job KEY [--tokens PARAMETER]` is the same
fetch as the scale-out's one-shot Batch job (AWS Batch can only append arguments to the image's
entry point, and there is no stdin): the job (no tokens) is read from the bucket, the tokens
from an SSM SecureString parameter that the job's role may read while the fetch lasts, into this
process's memory only. Its events are the job's log; with `--progress KEY` it also keeps its
state in that object for the client to poll (`JobState`). Its scratch disk goes with it, so the
file it is fetching is kept in the bucket as it grows (bucket_partial) and the next job resumes
it; SIGTERM (Batch stopping the job) stops the fetch, keeping what it has.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sdtui.bucket_layout import SHA256_META
from sdtui.errors import DeploymentError, Interrupted, SdtuiError
from sdtui.fetch.plan import RemoteFile, Resolved
from sdtui.modelfiles import sha256_file

AGENT = "sdtui-fetch-to-bucket"  # the User-Agent of the instance's requests to the hub
GIT_SHA1_META = "git-sha1"
TOKEN_VARS = ("HF_TOKEN", "CIVITAI_API_TOKEN")
JOB_LIMIT = 1024 * 1024  # bytes of the one JSON line read
# A policy just put on the role takes a while to reach S3: AccessDenied is retried this long.
POLICY_WAIT_S = 60.0
STATE_EVERY_S = 2.0  # a PUT each: hours of download cost cents, not dollars

Emit = Callable[[dict], None]


def key_of(prefix: str, resolved: Resolved, f: RemoteFile) -> str:
    return f"{prefix}{resolved.root}/{f.dest}"


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def present(s3, bucket: str, key: str, f: RemoteFile) -> bool:
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    meta = head.get("Metadata", {})
    if f.size is not None and head.get("ContentLength") != f.size:
        return False
    return (meta.get(SHA256_META) == f.sha256) if f.sha256 else (
        meta.get(GIT_SHA1_META) == f.git_sha1)


def _upload(s3, bucket: str, key: str, path: Path, f: RemoteFile,
            sleep: Callable[[float], None] = time.sleep) -> None:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    meta = {SHA256_META: f.sha256 or sha256_file(path)}
    if f.git_sha1:
        meta[GIT_SHA1_META] = f.git_sha1
    deadline = time.monotonic() + POLICY_WAIT_S
    delay = 1.0
    while True:
        try:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": meta})
            return
        except (ClientError, S3UploadFailedError) as exc:
            if "AccessDenied" not in str(exc) or time.monotonic() + delay > deadline:
                raise DeploymentError(f"the instance could not write s3://{bucket}/{key}: {exc}",
                                      fix="run sdtui again; the fetched file is kept on the "
                                      "instance and only uploaded") from None
            sleep(delay)
            delay = min(delay * 2, 10.0)


def run(job: dict, emit: Emit, *, keep_partials: bool = False) -> dict:
    """`keep_partials`: the staging disk goes with this run (the scale-out's job), so partial
    files are kept in the bucket for the next run to resume (bucket_partial)."""
    import boto3

    from sdtui.fetch import download
    from sdtui.fetch.bucket_partial import BucketKeeper
    from sdtui.fetch.progress import Meter
    from sdtui.fetch.store import Store
    from sdtui.fetch.store import key as blob_key

    bucket, prefix = str(job["bucket"]), str(job["prefix"])
    sets = [Resolved.from_json(s) for s in job["sets"]]
    for var in TOKEN_VARS:
        if token := (job.get("tokens") or {}).get(var):
            os.environ[var] = str(token)
    s3 = boto3.client("s3")
    keeper = BucketKeeper(s3, bucket) if keep_partials else None
    store = Store(Path(job["staging"]), keeper=keeper, space_fix=JOB_SPACE_FIX if keeper else
                  INSTANCE_SPACE_FIX)
    todo, skipped = [], []
    for resolved in sets:
        for f in resolved.files:
            key = key_of(prefix, resolved, f)
            if present(s3, bucket, key, f):
                skipped.append(key)
                emit({"type": "log", "message": f"{key}: already in the bucket, skipped"})
            else:
                todo.append((resolved, f, key))
    download.check_space(store, [f for _, f, _ in todo])
    meter = Meter(lambda file, done, total, rate, eta: emit(
        {"type": "download_progress", "file": file, "done": done, "total": total,
         "rate": rate, "eta_s": eta}))
    sent = 0
    for resolved, f, key in todo:
        download.fetch_file(store, resolved, f, meter, agent=AGENT)
        path = store.dest(resolved, f)
        emit({"type": "log", "message": f"{key}: verified, uploading"})
        _upload(s3, bucket, key, path, f)
        sent += path.stat().st_size
        path.unlink()
        (store.blobs / blob_key(f)).unlink(missing_ok=True)
        if keeper is not None:
            keeper.forget(f)
    return {"type": "done", "fetched": [k for _, _, k in todo], "skipped": skipped,
            "bytes": sent}


def main() -> int:
    line = sys.stdin.buffer.readline(JOB_LIMIT)
    try:
        job = json.loads(line)
        if not isinstance(job, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        _emit({"type": "error", "message": f"the fetch job is not one JSON object: {exc}",
               "fix": "run sdtui again"})
        return 2
    try:
        _emit(run(job, _emit))
    except SdtuiError as exc:
        _emit({"type": "error", "message": exc.message, "fix": exc.fix})
        return 1
    except (KeyError, TypeError, ValueError) as exc:
        _emit({"type": "error", "message": f"the fetch job is malformed: {exc!r}",
               "fix": "run sdtui again"})
        return 2
    return 0


class JobState:
    """The scale-out job's events to its log, and its state to the bucket for the client:
    `{"state": "running" | "done" | "failed", "files": {FILE: {"done", "total", "rate",
    "eta_s"}}}` (every file begun, in order, so a client that polls less often than files end
    still sees each one's last byte), plus `message` and `fix` when it failed. Written at most
    every STATE_EVERY_S, and always on a file's last byte and at the end. A state that cannot
    be written costs the client its view, never the fetch."""

    def __init__(self, s3, bucket: str, key: str | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.s3, self.bucket, self.key, self.clock = s3, bucket, key, clock
        self.state: dict = {"state": "running", "files": {}}
        self._written = float("-inf")

    def __call__(self, event: dict) -> None:
        _emit(event)
        kind = event.get("type")
        if kind == "download_progress":
            self.state["files"][event["file"]] = {k: event[k] for k in ("done", "total", "rate",
                                                                         "eta_s")}
            if (self.clock() - self._written < STATE_EVERY_S
                    and event["done"] != event["total"]):
                return
        elif kind == "done":
            self.state["state"] = "done"
        elif kind == "error":
            self.state |= {"state": "failed", "message": event.get("message"),
                           "fix": event.get("fix")}
        else:
            return
        self._write()

    def _write(self) -> None:
        if self.key is None:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        self._written = self.clock()
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(
                self.state).encode(), ContentType="application/json")
        except (BotoCoreError, ClientError) as exc:
            print(f"could not write the fetch's state: {exc}", file=sys.stderr)


# Where each run's staging disk gets room: the instance's root volume, or the job's (the compute
# environment's instances, from the same flag).
INSTANCE_SPACE_FIX = "free space on the instance (or deploy it anew with a larger --volume-gb)"
JOB_SPACE_FIX = "give the scale-out's instances a larger disk (--volume-gb)"


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Batch stops a job (TerminateJob: Ctrl-C on the client) with SIGTERM, and SIGKILL only after
    its stop timeout: time to keep the partial file's last bytes in the bucket. Raised where the
    job is, a read from a stalled hub included; a second SIGTERM is ignored."""
    def stop(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted("the fetch job was stopped", fix="run sdtui again: it resumes")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def batch_main(argv: list[str]) -> int:
    import boto3

    p = argparse.ArgumentParser(prog="python -m sdtui.worker fetch-to-bucket")
    p.add_argument("--bucket", required=True)
    p.add_argument("--job", required=True, metavar="KEY", help="the job's JSON in the bucket")
    p.add_argument("--tokens", metavar="PARAMETER", help="SSM SecureString parameter: the "
                   "tokens as a JSON object")
    p.add_argument("--region", help="the bucket's region (default: the container's)")
    p.add_argument("--progress", metavar="KEY", help="where to keep the fetch's state (JSON) "
                   "for the client")
    args = p.parse_args(argv)
    if args.region:
        os.environ["AWS_DEFAULT_REGION"] = args.region
    emit = JobState(boto3.client("s3"), args.bucket, args.progress)
    try:
        body = boto3.client("s3").get_object(Bucket=args.bucket, Key=args.job)["Body"]
        job = {**json.loads(body.read(JOB_LIMIT)), "bucket": args.bucket,
               "staging": str(Path(tempfile.gettempdir()) / "sdtui-fetch")}
        if args.tokens:
            job["tokens"] = json.loads(boto3.client("ssm").get_parameter(
                Name=args.tokens, WithDecryption=True)["Parameter"]["Value"])
        with _stopped_by_sigterm():
            emit(run(job, emit, keep_partials=True))
    except SdtuiError as exc:
        emit({"type": "error", "message": exc.message, "fix": exc.fix})
        return 1
    except Exception as exc:  # noqa: BLE001 (one line in the job's log, never a token)
        emit({"type": "error", "message": f"the fetch failed: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:300]}", "fix": "run sdtui again"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
