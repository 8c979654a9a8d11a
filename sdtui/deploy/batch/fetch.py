"""The scale-out's `fetch` step: a model named by reference goes from the hub into the bucket's
`models/` in a one-shot Batch job on the worker image (`python -m sdtui.worker fetch-to-bucket`,
sdtui/fetch/to_bucket.py), never through this machine, which only resolved it (the hub's API).

For the job's length only, and taken back in a `finally` (teardown undoes what a crash leaves,
by the ledger's record):
- a role of its own (under the run roles' IAM path, so the caller's iam:PassRole already names
  it): read and write `models/`, read its job's JSON, list the bucket, read one SSM parameter;
- the tokens (HF_TOKEN, CIVITAI_API_TOKEN) in that SSM SecureString parameter, read by the job
  into its memory: never in the job definition, the job's command or environment, its log, the
  ledger or the image;
- its job definition (no GPU) and its JSON at `fetch/<id>/job.json` (files and sha256s only).

The job writes its state to `fetch/<id>/progress.json`: each file's bytes, with rate and ETA,
which this machine polls and shows as download progress, and at the end `done`, or `failed`
with the one line and fix that this machine then ends with. Ctrl-C here terminates the job
before its role and tokens are taken back. The file it is fetching is kept in
`fetch/partial/<sha256>/` as it grows (besides its state and `models/`, the only keys it may
write), so the next run's job resumes it; those spans stay until that file is in `models/`.

A key whose object already carries the file's sha256 is never fetched again: the step is skipped
when all of them do, and the job skips each one that does.

The client holds a lock on its fetch (client_locks, by fetch id) while it follows the job. A
client that died leaves the job running: the next run on this state dir follows that job to its
end rather than start a second one, then takes back its role and tokens."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from sdtui import bucket_layout
from sdtui.client_locks import RequestLocks
from sdtui.deploy.aws import iam
from sdtui.deploy.aws.naming import FETCH_POLICY_NAME, MODELS_PREFIX, error_code, tags
from sdtui.deploy.aws.remote_fetch import FORWARDED, tokens
from sdtui.deploy.aws.settings import PARTITION
from sdtui.deploy.base import StepContext
from sdtui.deploy.batch import jobdef, names, policies, runs
from sdtui.errors import DeploymentError, Interrupted
from sdtui.fetch import bucket_partial, to_bucket
from sdtui.fetch.plan import Resolved
from sdtui.ledger import Ledger

FETCH_PREFIX = "fetch/"
COMMAND = "fetch-to-bucket"
VCPUS, MEMORY_MIB = 2, 4000  # no GPU: it downloads and uploads
ATTEMPT_S = 6 * 3600
POLL_S = 2.0
FINAL = {"SUCCEEDED", "FAILED"}
ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
STATE_LIMIT = 64 * 1024  # bytes of the job's state read


def new_fetch_id() -> str:
    return f"fetch-{bucket_layout.new_run_id()}"


def job_key(fetch: str) -> str:
    return f"{FETCH_PREFIX}{fetch}/job.json"


def state_key(fetch: str) -> str:
    return f"{FETCH_PREFIX}{fetch}/progress.json"


def parameter_name(name: str, fetch: str) -> str:
    return f"/sdtui/{name}/{fetch}/tokens"


def parameter_arn(region: str, account: str, parameter: str) -> str:
    return f"arn:{PARTITION}:ssm:{region}:{account}:parameter{parameter}"


def partial_prefixes(sets: list[Resolved]) -> list[str]:
    """Where the job keeps each of its files while fetching it (bucket_partial)."""
    return sorted({bucket_partial.prefix_of(f) for r in sets for f in r.files})


def fetch_role_policy(bucket: str, fetch: str, parameter_arn: str | None,
                      partials: list[str] = ()) -> dict:
    """The fetch job's role: `models/` read and written, its job read, the bucket listed (a
    missing key then answers 404, not 403, to the skip check), its own files' partial copies
    kept, read and deleted, its tokens read; nothing else."""
    statements = [
        {"Sid": "ReadTheFetchJob", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": policies.bucket_arn(bucket, job_key(fetch))},
        {"Sid": "WriteItsState", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": policies.bucket_arn(bucket, state_key(fetch))},
        {"Sid": "ReadAndWriteModels", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": policies.bucket_arn(bucket, f"{MODELS_PREFIX}*")},
        {"Sid": "ListTheBucket", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": policies.bucket_arn(bucket)},
    ]
    if partials:
        statements.append({"Sid": "KeepItsPartialFiles", "Effect": "Allow",
                           "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                           "Resource": [policies.bucket_arn(bucket, f"{p}*") for p in partials]})
    if parameter_arn:
        statements.append({"Sid": "ReadTheTokens", "Effect": "Allow",
                           "Action": "ssm:GetParameter", "Resource": parameter_arn})
    return {"Version": policies.VERSION, "Statement": statements}


def definition_params(name: str, *, image: str, job_role_arn: str, fetch: str) -> dict:
    params = jobdef.definition_params(name, image=image, job_role_arn=job_role_arn,
                                      attempt_s=ATTEMPT_S, run=fetch)
    params["containerProperties"]["command"] = [COMMAND, "--help"]
    params["containerProperties"]["resourceRequirements"] = [
        {"type": "VCPU", "value": str(VCPUS)}, {"type": "MEMORY", "value": str(MEMORY_MIB)}]
    return params


def command(bucket: str, region: str, fetch: str, parameter: str | None) -> list[str]:
    return [COMMAND, "--bucket", bucket, "--region", region, "--job", job_key(fetch),
            "--progress", state_key(fetch), *(["--tokens", parameter] if parameter else [])]


def environment() -> list[dict[str, str]]:
    """The shards' (tests: the endpoint and test keys) and where the hub is, if not the Hub."""
    env = {e["name"]: e["value"] for e in runs.child_environment()}
    env |= {k: os.environ[k] for k in FORWARDED if os.environ.get(k) and not k.startswith("AWS")}
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def all_present(s3, bucket: str, sets: list[Resolved]) -> bool:
    return all(to_bucket.present(s3, bucket, to_bucket.key_of(MODELS_PREFIX, r, f), f)
               for r in sets for f in r.files)


class Clients:
    """What the step calls: s3, ssm, iam and batch clients of the deployment's session."""

    def __init__(self, client: Callable[[str], object]) -> None:
        self.s3, self.ssm = client("s3"), client("ssm")
        self.iam, self.batch = client("iam"), client("batch")


def _job_of(batch, name: str, fetch_id: str) -> str | None:
    """The fetch's job while it has not ended (Batch keeps ended jobs' names too)."""
    for status in ACTIVE:
        pages = batch.get_paginator("list_jobs").paginate(jobQueue=names.job_queue(name),
                                                          jobStatus=status)
        for page in pages:
            for job in page["jobSummaryList"]:
                if job["jobName"] == names.job_name(name, fetch_id):
                    return str(job["jobId"])
    return None


def finish_left(ctx: StepContext, aws: Clients, ledger: Ledger, locks: RequestLocks, *,
                name: str, bucket: str, sleep: Callable[[float], None]) -> list[str]:
    """A fetch whose client died (SIGKILL, a closed laptop) left its job running and its role
    and tokens in place: followed to its end here, then taken back. Only this state dir's own
    (its ledger recorded each), and never one a live client still follows (its lock). The jobs
    followed."""
    followed = []
    for fetch_id in sorted({str(e.meta.get("run")) for e in ledger.resources("role")
                            if str(e.meta.get("run", "")).startswith("fetch-")}):
        if not locks.claim(fetch_id):
            raise DeploymentError(f"another sdtui is fetching a model for {name} ({fetch_id})",
                                  fix="let it finish, then run again: what it fetched is not "
                                  "fetched again")
        try:
            parameter = parameter_name(name, fetch_id)
            recorded = any(e.id == parameter for e in ledger.resources("parameter"))
            try:
                if job := _job_of(aws.batch, name, fetch_id):
                    ctx.log(f"fetch job {job} was left running by a client that quit: "
                            "following it to its end")
                    ended, state = _wait(ctx, aws, bucket, fetch_id, job, sleep)
                    ctx.log(f"fetch job {job}: {ended['status'].lower()}"
                            f"{': ' + str(state['message']) if state.get('message') else ''}")
                    followed.append(job)
            finally:
                take_back(aws, ledger, name, bucket, fetch_id, parameter if recorded else None)
        finally:
            locks.release(fetch_id)
    return followed


def fetch(ctx: StepContext, aws: Clients, ledger: Ledger, *, name: str, bucket: str,
          region: str, account: str, image: str, sets: list[Resolved],
          sleep: Callable[[float], None]) -> str:
    sources, locks = "; ".join(r.source for r in sets), RequestLocks(name)
    followed = finish_left(ctx, aws, ledger, locks, name=name, bucket=bucket, sleep=sleep)
    if followed and all_present(aws.s3, bucket, sets):
        return (f"{sum(len(r.files) for r in sets)} file(s) of {sources} fetched into "
                f"s3://{bucket}/{MODELS_PREFIX} by job {followed[-1]}, which a client that quit "
                "left running")
    fetch_id = new_fetch_id()
    locks.claim(fetch_id)
    try:
        return _fetch(ctx, aws, ledger, fetch_id, name=name, bucket=bucket, region=region,
                      account=account, image=image, sets=sets, sleep=sleep)
    finally:
        locks.release(fetch_id)


def _fetch(ctx: StepContext, aws: Clients, ledger: Ledger, fetch_id: str, *, name: str,
           bucket: str, region: str, account: str, image: str, sets: list[Resolved],
           sleep: Callable[[float], None]) -> str:
    sources = "; ".join(r.source for r in sets)
    found = tokens()
    parameter = parameter_name(name, fetch_id) if found else None
    role = names.run_role(name, fetch_id)
    # Recorded before each exists: a crash leaves nothing teardown cannot find.
    ledger.record("role", role, run=fetch_id)
    if parameter:
        ledger.record("parameter", parameter)
    try:
        aws.s3.put_object(Bucket=bucket, Key=job_key(fetch_id), ContentType="application/json",
                          Body=json.dumps({"prefix": MODELS_PREFIX,
                                           "sets": [r.to_json() for r in sets]}).encode())
        if parameter:
            aws.ssm.put_parameter(Name=parameter, Type="SecureString", Value=json.dumps(found),
                                  Description=f"sdtui {name}: tokens for fetch {fetch_id}, "
                                  "deleted when it ends", Tags=tags(name))
        arn = iam.ensure_role_named(
            aws.iam, role, policies.job_trust_policy(account),
            f"sdtui scale-out {name}: fetch {fetch_id} writes models/, for its length only",
            [*tags(name), {"Key": runs.RUN_TAG, "Value": fetch_id}],
            inline={FETCH_POLICY_NAME: fetch_role_policy(
                bucket, fetch_id, parameter and parameter_arn(region, account, parameter),
                partial_prefixes(sets))},
            path=names.run_role_path(name))
        definition = jobdef.register_run(aws.batch, definition_params(
            name, image=image, job_role_arn=arn, fetch=fetch_id))
        job = aws.batch.submit_job(
            jobName=names.job_name(name, fetch_id), jobQueue=names.job_queue(name),
            jobDefinition=definition, timeout={"attemptDurationSeconds": ATTEMPT_S},
            containerOverrides={"command": command(bucket, region, fetch_id, parameter),
                                "environment": environment()},
            propagateTags=True, tags={**names.tag_dict(name), runs.RUN_TAG: fetch_id})["jobId"]
        ctx.log(f"fetch job {job} submitted ({sources})")
        ended, state = _wait(ctx, aws, bucket, fetch_id, job, sleep)
    finally:
        take_back(aws, ledger, name, bucket, fetch_id, parameter)
    if ended["status"] != "SUCCEEDED":
        raise _failure(job, ended, state)
    if not all_present(aws.s3, bucket, sets):
        raise DeploymentError(f"the fetch job {job} ended, yet the bucket lacks files of "
                              f"{sources}", fix="run sdtui again")
    return (f"{sum(len(r.files) for r in sets)} file(s) of {sources} fetched into "
            f"s3://{bucket}/{MODELS_PREFIX} by job {job} "
            f"({sum(r.total for r in sets) / 2**20:.1f} MiB)")


def _failure(job: str, ended: dict, state: dict) -> DeploymentError:
    """The job's own line and fix when it wrote them; else what Batch says, and where its log
    is (a job that never ran its code: no image, no memory, no host)."""
    if state.get("state") == "failed" and state.get("message"):
        return DeploymentError(f"the fetch job {job} failed: {state['message']}",
                               fix=str(state.get("fix") or "run sdtui again"))
    reason = ended.get("statusReason") or ended.get("container", {}).get("reason") or ""
    return DeploymentError(f"the fetch job {job} failed: {reason or 'it wrote no reason'}",
                           fix="read its log in CloudWatch (/aws/batch/job), then run sdtui "
                           "again: what is in the bucket is not fetched again")


def read_state(s3, bucket: str, fetch_id: str) -> dict:
    """The job's state (see the module's doc); {} before it wrote one."""
    try:
        body = s3.get_object(Bucket=bucket, Key=state_key(fetch_id))["Body"].read(STATE_LIMIT)
        state = json.loads(body)
    except ClientError as exc:
        if error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
            return {}
        raise
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _wait(ctx: StepContext, aws: Clients, bucket: str, fetch_id: str, job: str,
          sleep: Callable[[float], None]) -> tuple[dict, dict]:
    """Until the job ends: its description and its last state."""
    try:
        return _poll(ctx, aws, bucket, fetch_id, job, sleep)
    except KeyboardInterrupt:  # Ctrl-C here: the job does not go on without its client
        _terminate(aws.batch, job)
        raise


def _terminate(batch, job: str) -> None:
    with contextlib.suppress(ClientError, BotoCoreError):
        batch.terminate_job(jobId=job, reason="cancelled with sdtui")


def _show(ctx: StepContext, state: dict, shown: dict) -> None:
    """Each file's progress that changed since the last poll, as download progress."""
    files = state.get("files")
    for file, p in files.items() if isinstance(files, dict) else ():
        if isinstance(p, dict) and shown.get(file) != p.get("done"):
            shown[file] = p.get("done")
            ctx.download(str(file), int(p.get("done") or 0), p.get("total"),
                         float(p.get("rate") or 0.0), p.get("eta_s"))


def _poll(ctx: StepContext, aws: Clients, bucket: str, fetch_id: str, job: str,
          sleep: Callable[[float], None]) -> tuple[dict, dict]:
    status, shown = None, {}
    while True:
        if ctx.cancel.is_set():
            _terminate(aws.batch, job)
            raise Interrupted("the fetch job was stopped",
                              fix="run the same command again: files already in the bucket "
                              "are kept")
        described = aws.batch.describe_jobs(jobs=[job])["jobs"][0]
        if described["status"] != status:
            status = described["status"]
            ctx.log(f"fetch job {job}: {status.lower()}")
        state = read_state(aws.s3, bucket, fetch_id) if status in FINAL | {"RUNNING"} else {}
        _show(ctx, state, shown)
        if status in FINAL:
            return described, state
        sleep(POLL_S)


def delete_parameter(ssm, parameter: str) -> bool:
    """False when it was already gone."""
    try:
        ssm.delete_parameter(Name=parameter)
    except ClientError as exc:
        if error_code(exc) != "ParameterNotFound":
            raise
        return False
    return True


def take_back(aws: Clients, ledger: Ledger, name: str, bucket: str, fetch_id: str,
              parameter: str | None) -> None:
    """The tokens, the role, the job definition, the job's JSON and state, each gone (teardown
    does it for whatever a crash left: it was recorded before it was made)."""
    if parameter:
        delete_parameter(aws.ssm, parameter)
        ledger.forget("parameter", parameter)
    role = names.run_role(name, fetch_id)
    if iam.role_tagged(aws.iam, role, names.TAG_KEY, name):
        iam.delete_role_named(aws.iam, role)
    ledger.forget("role", role)
    jobdef.deregister_run(aws.batch, name, fetch_id)
    for key in (job_key(fetch_id), state_key(fetch_id)):
        aws.s3.delete_object(Bucket=bucket, Key=key)
