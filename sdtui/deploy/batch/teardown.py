"""Teardown in dependency order: the queue (its unfinished jobs end with it), the compute
environment (Batch terminates its instances), the job definitions, the launch template, the
security group, the roles, the ECR repository. The bucket is kept unless --purge-bucket, and
only a bucket this deployment created is ever deleted. Idempotent; never raises half-way; says
what it could not delete."""

from __future__ import annotations

import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from sdtui.deploy.aws import bucket, ecr, iam
from sdtui.deploy.aws.naming import TAG_KEY
from sdtui.deploy.aws.session import client
from sdtui.deploy.aws.teardown import S3_USD_PER_GB_MONTH, bucket_size_gb
from sdtui.deploy.base import Resource, TeardownReport
from sdtui.deploy.batch import compute, fetch, jobdef, launch_template, names, network
from sdtui.deploy.batch import queue as job_queue
from sdtui.errors import SdtuiError
from sdtui.ledger import Ledger


def teardown(session, name: str, ledger: Ledger | None, *, purge_bucket: bool = False,
             log: Callable[[str], None] = lambda line: None,
             sleep: Callable[[float], None] = time.sleep) -> TeardownReport:
    report = TeardownReport()
    batch, ec2 = client(session, "batch"), client(session, "ec2")
    iam_client, s3, ecr_client = client(session, "iam"), client(session, "s3"), \
        client(session, "ecr")

    def attempt(kind: str, rid: str, action: Callable[[], object], note: str = "") -> bool:
        try:
            existed = action()
        except (ClientError, BotoCoreError, OSError, SdtuiError) as exc:
            log(f"could not delete {kind} {rid}: {exc}")
            report.left.append(Resource(kind, rid, "left", note=f"{note}{exc}".strip()))
            return False
        if existed is not False and existed != []:
            report.removed.append(Resource(kind, rid, "deleted"))
            log(f"deleted {kind} {rid}")
        if ledger is not None:
            for entry in ledger.resources(kind):
                if entry.id == rid or kind in {"security_group", "launch_template"}:
                    ledger.forget(kind, entry.id)
        return True

    queue_gone = attempt("job_queue", names.job_queue(name),
                         lambda: job_queue.delete(batch, name, sleep=sleep),
                         "free; its jobs may still run; ")
    compute_gone = queue_gone and attempt(
        "compute_environment", names.compute_environment(name),
        lambda: compute.delete(batch, name, sleep=sleep),
        "free while idle; running instances bill until Batch stops them; ")
    run_ids = [e.id for e in ledger.resources("run")] if ledger is not None else []
    run_ids += [e.meta["run"] for e in ledger.resources("role") if e.meta.get("run")
                and e.meta["run"] not in run_ids] if ledger is not None else []
    ssm = client(session, "ssm")
    for entry in ledger.resources("parameter") if ledger is not None else []:
        # a fetch's tokens a crash left behind
        attempt("parameter", entry.id, lambda p=entry.id: fetch.delete_parameter(ssm, p), "free; ")
    attempt("job_definition", names.job_definition(name),
            lambda: jobdef.deregister_all(batch, name, run_ids), "free; ")
    if compute_gone:
        attempt("launch_template", names.launch_template(name),
                lambda: launch_template.delete(ec2, name), "free; ")
        group = network.find_security_group(ec2, name)
        if group is not None:
            attempt("security_group", group["GroupId"],
                    lambda: network.delete_security_group(ec2, group["GroupId"], sleep), "free; ")
        elif ledger is not None:
            for entry in ledger.resources("security_group"):
                ledger.forget("security_group", entry.id)
        attempt("instance_profile", names.instance_profile(name),
                lambda: iam.delete_instance_profile_named(iam_client,
                                                          names.instance_profile(name)), "free; ")
        for role in (names.instance_role(name), names.job_role(name)):
            attempt("role", role, lambda role=role: iam.delete_role_named(iam_client, role),
                    "free; ")
        for entry in ledger.resources("role") if ledger is not None else []:
            if entry.meta.get("run"):  # a run's role: ours by this ledger and our tag
                attempt("role", entry.id, lambda role=entry.id: iam.role_tagged(
                    iam_client, role, TAG_KEY, name) and iam.delete_role_named(
                    iam_client, role), "free; ")
    attempt("ecr_repository", names.repository(name),
            lambda: ecr.delete_repository(ecr_client, name),
            f"about ${ecr.USD_PER_GB_MONTH:.2f}/GB-month; ")

    _bucket(s3, ledger, purge_bucket, report, attempt)
    # A kept bucket keeps the ledger: it remembers that this deployment made the bucket.
    if ledger is not None and not report.left and not [
            e for e in ledger.resources() if e.kind not in {"object", "run"}]:
        ledger.delete()
    return report


def _bucket(s3, ledger: Ledger | None, purge: bool, report: TeardownReport,
            attempt: Callable[..., bool]) -> None:
    """Runs and models stay in the bucket unless --purge-bucket, and only a bucket this
    deployment created is deleted (Option A's is Option A's)."""
    if ledger is None:
        return
    for entry in ledger.resources("bucket"):
        try:
            size = bucket_size_gb(s3, entry.id)
        except (ClientError, BotoCoreError):
            size = 0.0
        cost = f"{size:.1f} GB, about ${size * S3_USD_PER_GB_MONTH:.2f}/month"
        if purge and entry.meta.get("created"):
            attempt("bucket", entry.id, lambda b=entry.id: _purge(s3, b), f"{cost}; ")
        else:
            why = ("it was there before this deployment" if purge
                   else "--purge-bucket deletes it")
            report.kept.append(Resource("bucket", entry.id, "kept", True, f"{cost}; {why}"))


def _purge(s3, name: str) -> bool:
    bucket.empty_and_delete(s3, name)
    return True
