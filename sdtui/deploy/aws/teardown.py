"""Leak-free teardown: from the ledger plus a sweep of the deployment tag, in dependency order,
idempotent, and honest about anything it could not delete and what that still costs."""

from __future__ import annotations

import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from sdtui.deploy.aws import access, bucket, iam, instance
from sdtui.deploy.aws.naming import (
    error_code,
    instance_profile_name,
    key_pair_name,
    role_name,
    tag_filter,
)
from sdtui.deploy.aws.pricing import FALLBACK_HOURLY
from sdtui.deploy.aws.session import client
from sdtui.deploy.base import Resource, TeardownReport
from sdtui.ledger import Ledger

S3_USD_PER_GB_MONTH = 0.023
SG_RETRY_DELAYS = (5, 10, 20)  # a group stays "in use" until the instance's ENI is released


def _instance_ids(ec2, name: str, ledger: Ledger | None) -> list[str]:
    swept = ec2.describe_instances(
        Filters=[tag_filter(name), {"Name": "instance-state-name",
                                    "Values": [*instance.LIVE_STATES, "shutting-down"]}]
    )["Reservations"]
    ids = {i["InstanceId"] for r in swept for i in r["Instances"]}
    if ledger is not None:
        for entry in ledger.resources("instance"):
            try:
                state = instance.describe(ec2, entry.id)["State"]["Name"]
            except (ClientError, IndexError):
                continue
            if state != "terminated":
                ids.add(entry.id)
    return sorted(ids)


def _security_group_ids(ec2, name: str, ledger: Ledger | None) -> list[str]:
    ids = {g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[tag_filter(name)])["SecurityGroups"]}
    if ledger is not None:
        ids.update(e.id for e in ledger.resources("security_group"))
    return sorted(ids)


def bucket_size_gb(s3, name: str) -> float:
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total / 1e9


def teardown(
    session,
    name: str,
    ledger: Ledger | None,
    *,
    purge_bucket: bool = False,
    log: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
    terminate_wait: dict | None = None,
) -> TeardownReport:
    """Delete everything deployment `name` created; never raises half-way."""
    report = TeardownReport()
    ec2 = client(session, "ec2")
    iam_client = client(session, "iam")
    s3 = client(session, "s3")

    def attempt(kind: str, rid: str, action: Callable[[], bool | None], note: str = "") -> bool:
        try:
            existed = action()
        except (ClientError, BotoCoreError, OSError) as exc:
            log(f"could not delete {kind} {rid}: {exc}")
            report.left.append(Resource(kind, rid, "left", note=f"{note}{exc}".strip()))
            return False
        if existed is not False:
            report.removed.append(Resource(kind, rid, "deleted"))
            log(f"deleted {kind} {rid}")
        if ledger is not None:
            ledger.forget(kind, rid)
        return True

    # 1. instances, waited for: everything else depends on them being gone
    try:
        ids = _instance_ids(ec2, name, ledger)
    except (ClientError, BotoCoreError) as exc:
        ids = []
        report.left.append(Resource("instance", "?", "unknown", note=f"could not list: {exc}"))
    instance_left = False
    if ids:
        hourly = FALLBACK_HOURLY.get(str((ledger.params if ledger else {}).get("instance_type")))
        cost = f"a running instance costs about ${hourly}/h; " if hourly else ""
        log(f"terminating {', '.join(ids)}")
        ok = True
        try:
            instance.terminate(ec2, ids, terminate_wait)
        except Exception as exc:  # noqa: BLE001 (a waiter timeout or an API error: report it)
            ok = False
            for rid in ids:
                report.left.append(Resource("instance", rid, "left", note=f"{cost}{exc}"))
            instance_left = True
        if ok:
            for rid in ids:
                attempt("instance", rid, lambda: True)

    # 2. security groups (retried: AWS releases the instance's network interface late)
    for group_id in [] if instance_left else _security_group_ids(ec2, name, ledger):
        def delete_group(group_id: str = group_id) -> bool:
            for delay in (*SG_RETRY_DELAYS, None):
                try:
                    ec2.delete_security_group(GroupId=group_id)
                    return True
                except ClientError as exc:
                    if error_code(exc) == "InvalidGroup.NotFound":
                        return False
                    if error_code(exc) != "DependencyViolation" or delay is None:
                        raise
                    sleep(delay)
            return True

        attempt("security_group", group_id, delete_group, "free; ")
    if instance_left:
        report.left.append(Resource("security_group", "*", "left", note="in use by the instance"))

    # 3. key pair and its local private key
    attempt("key_pair", key_pair_name(name), lambda: access.delete_key_pair(ec2, name), "free; ")

    # 4. instance profile, then the role and its policy
    attempt("instance_profile", instance_profile_name(name),
            lambda: iam.delete_instance_profile(iam_client, name), "free; ")
    attempt("role", role_name(name), lambda: iam.delete_role(iam_client, name), "free; ")

    # 5. the bucket: user data, kept unless asked
    if ledger is not None:
        for entry in ledger.resources("bucket"):
            if purge_bucket:
                try:
                    size = bucket_size_gb(s3, entry.id)
                except (ClientError, BotoCoreError):
                    size = 0.0
                note = f"about ${size * S3_USD_PER_GB_MONTH:.2f}/month for {size:.1f} GB; "
                if attempt("bucket", entry.id, lambda b=entry.id: _purge(s3, b), note):
                    for obj in ledger.resources("object"):
                        ledger.forget("object", obj.id)
            else:
                try:
                    size = bucket_size_gb(s3, entry.id)
                    note = (f"{size:.1f} GB of model files, about "
                            f"${size * S3_USD_PER_GB_MONTH:.2f}/month; --purge-bucket deletes it")
                except (ClientError, BotoCoreError):
                    note = "--purge-bucket deletes it"
                report.kept.append(Resource("bucket", entry.id, "kept", True, note))

    if ledger is not None and not report.left:
        remaining = [e for e in ledger.resources() if e.kind not in {"bucket", "object"}]
        if not remaining and not ledger.resources("bucket"):
            ledger.delete()
    return report


def _purge(s3, name: str) -> bool:
    try:
        bucket.empty_and_delete(s3, name)
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            return False
        raise
    return True
