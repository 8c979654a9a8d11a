"""The stand-in against what AWS does: moto, as the tests run it (over HTTP, checking signatures
and IAM policies), must authorize S3 requests by the IAM actions AWS uses, so that a policy it
accepts is one AWS accepts, and one it refuses is one AWS refuses.

AWS authorizes ListObjects and ListObjectsV2 with `s3:ListBucket`, and HeadObject with
`s3:GetObject`; with `s3:ListBucket` a missing key is 404 (the S3 user guide's
"Actions, resources, and condition keys for Amazon S3" and the knowledge-center article on
AccessDenied from ListObjects). moto 5.2.6 authorized `GET /` on a bucket as `s3:ListObjects`, an
action that does not exist: the instance role's correct policy was refused, and s3fs could not
mount (issue 20). The dev lock pins a moto that answers as AWS does; this test guards the pin.
"""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

from sdtui.deploy.aws.iam import read_bucket_policy

from .conftest import serve_moto

BUCKET = "sdtui-conformance-models"
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


@pytest.fixture(scope="module")
def enforcing_moto(tmp_path_factory):
    """A moto of its own (the shared one serves tests that run without IAM checks)."""
    yield from serve_moto(tmp_path_factory)


def _role_session(url: str, name: str, policy: dict) -> boto3.Session:
    admin = boto3.Session(aws_access_key_id="admin", aws_secret_access_key="admin",
                          region_name="us-east-1")
    iam = admin.client("iam", endpoint_url=url)
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    c = admin.client("sts", endpoint_url=url).assume_role(
        RoleArn=arn, RoleSessionName="i-0123456789abcdef0")["Credentials"]
    return boto3.Session(aws_access_key_id=c["AccessKeyId"], region_name="us-east-1",
                         aws_secret_access_key=c["SecretAccessKey"],
                         aws_session_token=c["SessionToken"])


@pytest.fixture(scope="module")
def s3_as(enforcing_moto):
    """S3 clients acting as the instance role (sdtui's read policy) and as a role that may only
    GetObject; from then on moto checks every request as AWS does."""
    admin_s3 = boto3.client("s3", endpoint_url=enforcing_moto, region_name="us-east-1",
                            aws_access_key_id="admin", aws_secret_access_key="admin")
    admin_s3.create_bucket(Bucket=BUCKET)
    admin_s3.put_object(Bucket=BUCKET, Key="models/tiny.safetensors", Body=b"weights")
    sessions = {
        "instance": _role_session(enforcing_moto, "conformance-instance",
                                  read_bucket_policy(BUCKET)),
        "get-only": _role_session(enforcing_moto, "conformance-get-only", {
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}),
    }
    urllib.request.urlopen(urllib.request.Request(
        f"{enforcing_moto}/moto-api/reset-auth", data=b"0", method="POST",
        headers={"Content-Type": "text/plain"}))
    return {who: s.client("s3", endpoint_url=enforcing_moto) for who, s in sessions.items()}


def _code(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"]


def test_listing_a_bucket_is_authorized_by_s3_listbucket(s3_as):
    s3 = s3_as["instance"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [
        "models/tiny.safetensors"]
    assert s3.list_objects(Bucket=BUCKET, Prefix="models/")["Contents"]
    assert _code(lambda: s3_as["get-only"].list_objects_v2(Bucket=BUCKET)) == "AccessDenied"


def test_reading_an_object_is_authorized_by_s3_getobject(s3_as):
    s3 = s3_as["instance"]
    assert s3.get_object(Bucket=BUCKET, Key="models/tiny.safetensors")["Body"].read() == b"weights"
    assert s3.head_object(Bucket=BUCKET, Key="models/tiny.safetensors")["ContentLength"] == 7


def test_a_missing_key_is_404_for_a_role_that_may_list(s3_as):
    """s3fs tells a missing object from a refused one by this answer. (Without s3:ListBucket AWS
    answers 403 and moto 404: no test relies on that case.)"""
    assert _code(lambda: s3_as["instance"].head_object(Bucket=BUCKET, Key="nope")) == "404"


def test_the_read_role_cannot_write(s3_as):
    assert _code(lambda: s3_as["instance"].put_object(
        Bucket=BUCKET, Key="models/x", Body=b"x")) == "AccessDenied"
