"""The private model bucket: no public access, no ACLs, encrypted by default, tagged."""

from __future__ import annotations

from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import TAG_KEY, error_code
from sdtui.errors import BadInput, DeploymentError

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
DEFAULT_ENCRYPTION = {
    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
}


def bucket_exists_for_us(s3, bucket: str) -> bool:
    """True when the bucket exists and we can use it; BadInput when someone else owns it."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
            return False
        if error_code(exc) in {"403", "AccessDenied", "Forbidden"}:
            raise _taken(bucket, None) from None
        raise
    return True


def _taken(bucket: str, account: str | None) -> BadInput:
    suggestion = f"{bucket}-{account[-6:]}" if account else f"{bucket}-<something unique>"
    return BadInput(
        f"bucket name {bucket!r} is taken by another AWS account (names are global)",
        fix=f"pass a unique --bucket, e.g. {suggestion}",
    )


def region_of(s3, bucket: str) -> str:
    """The region the bucket lives in (GetBucketLocation answers None for us-east-1 and "EU"
    for the oldest eu-west-1 buckets)."""
    location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def check_region(s3, bucket: str, region: str) -> None:
    """BadInput when an existing bucket lives in another region than the deployment: s3fs on
    the instance is given the deployment's region and refuses such a bucket after it has
    already daemonised, so the launch would fail only at the mount."""
    found = region_of(s3, bucket)
    if found != region:
        raise BadInput(
            f"bucket {bucket!r} is in {found}, not in the deployment's region {region}",
            fix=f"pass --region {found} (the instance then runs beside its model), or a "
                "--bucket in this region",
        )


def ensure_bucket(s3, bucket: str, region: str, deployment: str, account: str,
                  *, ours: bool = False) -> str:
    """Create the bucket, or reuse one; either way enforce the security settings. Only a bucket
    sdtui created (now, or `ours` by the ledger) gets the deployment tag: a user's bucket is
    never marked as sdtui's. Returns "created" or "reused"."""
    outcome = "reused"
    if not bucket_exists_for_us(s3, bucket):
        kwargs: dict = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
            outcome = "created"
        except ClientError as exc:
            code = error_code(exc)
            if code == "BucketAlreadyExists":
                raise _taken(bucket, account) from None
            if code != "BucketAlreadyOwnedByYou":
                raise DeploymentError(f"could not create bucket {bucket}: {exc}") from exc
        s3.get_waiter("bucket_exists").wait(
            Bucket=bucket, WaiterConfig={"Delay": 2, "MaxAttempts": 15}
        )
    enforce_settings(s3, bucket, deployment, tag=ours or outcome == "created")
    return outcome


def enforce_settings(s3, bucket: str, deployment: str, *, tag: bool = True) -> None:
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=OWNERSHIP)
    if not _has_default_encryption(s3, bucket):  # keep a user's own SSE-KMS choice
        s3.put_bucket_encryption(
            Bucket=bucket, ServerSideEncryptionConfiguration=DEFAULT_ENCRYPTION
        )
    if not tag:
        return
    tags = _tags(s3, bucket)
    if tags.get(TAG_KEY) != deployment:
        tags[TAG_KEY] = deployment
        s3.put_bucket_tagging(
            Bucket=bucket,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
        )


def settings_ok(s3, bucket: str) -> bool:
    """Whether the bucket exists with every security setting on (a describe-only check)."""
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        rules = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    except ClientError:
        return False
    return (
        all(block.get(k) for k in PUBLIC_ACCESS_BLOCK)
        and rules == OWNERSHIP["Rules"]
        and _has_default_encryption(s3, bucket)
    )


def deployment_tag(s3, bucket: str) -> str | None:
    """The sdtui deployment the bucket is tagged for, or None when it carries no tag of ours."""
    return _tags(s3, bucket).get(TAG_KEY)


def _has_default_encryption(s3, bucket: str) -> bool:
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    except ClientError as exc:
        if error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return False
        raise
    return bool(rules.get("Rules"))


def tagged_for(s3, bucket: str, deployment: str) -> bool:
    return _tags(s3, bucket).get(TAG_KEY) == deployment


def _tags(s3, bucket: str) -> dict[str, str]:
    try:
        tag_set = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except ClientError as exc:
        if error_code(exc) == "NoSuchTagSet":
            return {}
        raise
    return {t["Key"]: t["Value"] for t in tag_set}


def empty_and_delete(s3, bucket: str) -> None:
    """--purge-bucket: every object version, every unfinished upload, then the bucket."""
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
