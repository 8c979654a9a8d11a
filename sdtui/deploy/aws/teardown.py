"""Leak-free teardown: from the ledger plus a sweep of the deployment tag, in dependency order,
idempotent, and honest about anything it could not delete and what that still costs.

Ownership: only what carries the tag sdtui:deployment=NAME, for a deployment this machine's
ledger records, is deleted; the bucket only when the ledger also says sdtui created it. A bucket
that was the user's stays theirs ("yours, kept"), and --purge-bucket on it is refused before
anything is deleted. Without a ledger nothing is deleted: what carries the tag is listed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from sdtui.deploy.aws import access, bucket, ecr, iam, instance
from sdtui.deploy.aws.naming import (
    TAG_KEY,
    error_code,
    instance_profile_name,
    key_pair_name,
    repository_name,
    role_name,
    tag_filter,
)
from sdtui.deploy.aws.pricing import FALLBACK_HOURLY
from sdtui.deploy.aws.session import client
from sdtui.deploy.base import Resource, TeardownReport
from sdtui.errors import BadInput
from sdtui.ledger import Ledger

S3_USD_PER_GB_MONTH = 0.023
SG_RETRY_DELAYS = (5, 10, 20)  # a group stays "in use" until the instance's ENI is released
YOURS = "yours (not created by sdtui): used for the model files, never deleted"
NOT_RECORDED = ("tagged for this deployment but not in this machine's ledger (another "
                "machine's deployment?): not deleted")


def _tagged(tags: list[dict] | None, name: str) -> bool:
    return any(t.get("Key") == TAG_KEY and t.get("Value") == name for t in tags or [])


def _bucket_state(s3, bucket_name: str, name: str, ledger: Ledger | None) -> str:
    """"absent", "ours" (the ledger says sdtui created it and it carries the tag) or "yours"."""
    try:
        s3.head_bucket(Bucket=bucket_name)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
            return "absent"
        return "yours"  # another account's, or one we may not read: not ours either way
    entry = next((e for e in ledger.resources("bucket") if e.id == bucket_name), None) \
        if ledger is not None else None
    if entry is None or not entry.meta.get("created"):
        return "yours"
    try:
        return "ours" if bucket.tagged_for(s3, bucket_name, name) else "yours"
    except ClientError:
        return "yours"


def refuse_foreign_purge(session, name: str, ledger: Ledger | None,
                         named_bucket: str | None) -> None:
    """--purge-bucket of a bucket sdtui did not create: BadInput, before anything is deleted."""
    s3 = client(session, "s3")
    names = [e.id for e in ledger.resources("bucket")] if ledger is not None else []
    names += [b for b in [named_bucket] if b and b not in names]
    for bucket_name in names:
        if _bucket_state(s3, bucket_name, name, ledger) == "yours":
            raise BadInput(
                f"bucket {bucket_name} was not created by sdtui for deployment {name} (its "
                f"ledger does not record creating it, or it lacks the {TAG_KEY}={name} tag): it "
                "is yours, and sdtui never deletes it",
                fix="tear down without --purge-bucket; empty or delete it yourself if you must")


def _unrecorded(ec2, name: str, ecr_client) -> TeardownReport:
    """No ledger: list what carries the tag, delete nothing."""
    report = TeardownReport()
    with contextlib.suppress(ClientError, BotoCoreError, BadInput):
        if ecr.describe(ecr_client, name) is not None:  # BadInput: not even tagged
            report.kept.append(Resource("ecr_repository", repository_name(name),
                                        note=NOT_RECORDED))
    with contextlib.suppress(ClientError, BotoCoreError):
        for rid in _instance_ids(ec2, name, None):
            report.left.append(Resource("instance", rid, "left", note=NOT_RECORDED))
        for group in ec2.describe_security_groups(Filters=[tag_filter(name)])["SecurityGroups"]:
            report.kept.append(Resource("security_group", group["GroupId"], note=NOT_RECORDED))
        for key in ec2.describe_key_pairs(Filters=[tag_filter(name)])["KeyPairs"]:
            report.kept.append(Resource("key_pair", key["KeyName"], note=NOT_RECORDED))
    return report


def _instance_ids(ec2, name: str, ledger: Ledger | None) -> list[str]:
    swept = ec2.describe_instances(
        Filters=[tag_filter(name), {"Name": "instance-state-name",
                                    "Values": [*instance.LIVE_STATES, "shutting-down"]}]
    )["Reservations"]
    ids = {i["InstanceId"] for r in swept for i in r["Instances"]}
    if ledger is not None:
        for entry in ledger.resources("instance"):
            try:
                found = instance.describe(ec2, entry.id)
            except (ClientError, IndexError):
                continue
            if found["State"]["Name"] != "terminated" and _tagged(found.get("Tags"), name):
                ids.add(entry.id)
    return sorted(ids)


def _security_group_ids(ec2, name: str) -> list[str]:
    """The deployment's groups: the tag decides (a group the ledger names without it is not
    ours)."""
    return sorted(g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[tag_filter(name)])["SecurityGroups"])


def _tags_of(kind: str, name: str, ec2, iam_client) -> list[dict] | None:
    """The tags of the named key pair, instance profile or role; None when it does not exist."""
    try:
        if kind == "key_pair":
            return ec2.describe_key_pairs(KeyNames=[key_pair_name(name)])["KeyPairs"][0].get(
                "Tags") or []
        if kind == "instance_profile":
            return iam_client.get_instance_profile(InstanceProfileName=instance_profile_name(
                name))["InstanceProfile"].get("Tags") or []
        return iam_client.get_role(RoleName=role_name(name))["Role"].get("Tags") or []
    except ClientError as exc:
        if error_code(exc) in {"InvalidKeyPair.NotFound", "NoSuchEntity"}:
            return None
        raise


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
    ec2 = client(session, "ec2")
    if ledger is None:
        return _unrecorded(ec2, name, client(session, "ecr"))
    if purge_bucket:
        refuse_foreign_purge(session, name, ledger, None)
    report = TeardownReport()
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
        hourly = FALLBACK_HOURLY.get(str(ledger.params.get("instance_type")))
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
    if not instance_left:  # what ran on the instance went with it
        for entry in ledger.resources("container") + ledger.resources("image"):
            ledger.forget(entry.kind, entry.id)

    # 2. security groups (retried: AWS releases the instance's network interface late)
    for group_id in [] if instance_left else _security_group_ids(ec2, name):
        attempt("security_group", group_id,
                lambda group_id=group_id: access.delete_security_group(
                    ec2, group_id, SG_RETRY_DELAYS, sleep), "free; ")
    if instance_left:
        report.left.append(Resource("security_group", "*", "left", note="in use by the instance"))

    # 3. key pair and its local private key, 4. instance profile, then the role and its policy
    deleters = {
        "key_pair": (key_pair_name(name), lambda: access.delete_key_pair(ec2, name)),
        "instance_profile": (instance_profile_name(name),
                             lambda: iam.delete_instance_profile(iam_client, name)),
        "role": (role_name(name), lambda: iam.delete_role(iam_client, name)),
    }
    for kind, (rid, delete) in deleters.items():
        try:
            tags = _tags_of(kind, name, ec2, iam_client)
        except (ClientError, BotoCoreError) as exc:
            report.left.append(Resource(kind, rid, "left", note=f"free; {exc}"))
            continue
        if tags is not None and not _tagged(tags, name):
            report.kept.append(Resource(kind, rid, note=f"not created by sdtui (no {TAG_KEY} "
                                        "tag): never deleted"))
            ledger.forget(kind, rid)
            if kind == "key_pair":  # our own private key file is still ours
                access.private_key_path(name).unlink(missing_ok=True)
            continue
        attempt(kind, rid, delete, "free; ")

    # 5. the bucket: user data, kept unless asked; a user's own bucket is never deleted
    bucket_kept = False  # a bucket of ours stays: the repository stays with it
    for entry in ledger.resources("bucket"):
        state = _bucket_state(s3, entry.id, name, ledger)
        if state != "ours":
            if state == "yours":
                report.kept.append(Resource("bucket", entry.id, "kept", True, YOURS))
            ledger.forget("bucket", entry.id)
            continue
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
            bucket_kept = True

    # 6. the ECR repository: the worker image a later launch pulls; kept with a bucket of ours
    for entry in ledger.resources("ecr_repository"):
        _repository(client(session, "ecr"), name, entry.id, bool(entry.meta.get("created")),
                    ledger, report, not bucket_kept, attempt)

    # A kept bucket or repository keeps the ledger: it remembers that this deployment made them.
    if not report.left and not [e for e in ledger.resources() if e.kind != "object"]:
        ledger.delete()
    return report


REPOSITORY_KEPT = ("the worker image the next launch pulls instead of building, about "
                   f"${ecr.USD_PER_GB_MONTH:.2f}/GB-month; --purge-bucket deletes it")


def _repository(ecr_client, name: str, repository: str, created: bool, ledger: Ledger,
                report: TeardownReport, delete: bool,
                attempt: Callable[[str, str, Callable[[], bool | None], str], bool]) -> None:
    """Kept while a bucket of ours is kept (a relaunch pulls from it); otherwise (with
    --purge-bucket, or beside a bucket of yours, which sdtui could never purge later) deleted
    when this deployment created it and it carries our tag. One sdtui did not create is never
    deleted."""
    try:
        found = ecr.describe(ecr_client, name) if created else None
    except BadInput:  # our name without our tag: not ours
        created = False
    except (ClientError, BotoCoreError) as exc:
        report.left.append(Resource("ecr_repository", repository, "left", note=f"{exc}"))
        return
    if not created:
        report.kept.append(Resource("ecr_repository", repository, "kept", True,
                                    "not created by this deployment: never deleted"))
        ledger.forget("ecr_repository", repository)
    elif found is None:
        ledger.forget("ecr_repository", repository)
    elif delete:
        attempt("ecr_repository", repository, lambda: ecr.delete_repository(ecr_client, name),
                f"about ${ecr.USD_PER_GB_MONTH:.2f}/GB-month; ")
    else:
        report.kept.append(Resource("ecr_repository", repository, "kept", True,
                                    REPOSITORY_KEPT))


def _purge(s3, name: str) -> bool:
    try:
        bucket.empty_and_delete(s3, name)
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            return False
        raise
    return True
