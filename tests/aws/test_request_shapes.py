"""The requests sdtui builds as data, checked by code we did not write: botocore's parameter
validator against the service models (RunInstances for every launch variant) and moto's IAM
policy grammar (the trust policy and the bucket policy, a dotted bucket name included)."""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.validate import ParamValidator
from moto.iam.policy_validation import (
    IAMPolicyDocumentValidator,
    IAMTrustPolicyDocumentValidator,
)

from sdtui.deploy.aws import access, iam, instance
from sdtui.deploy.aws.bucket import DEFAULT_ENCRYPTION, OWNERSHIP, PUBLIC_ACCESS_BLOCK


def shape(service: str, operation: str):
    return botocore.session.get_session().get_service_model(service).operation_model(
        operation).input_shape


def validate(service: str, operation: str, params: dict) -> None:
    report = ParamValidator().validate(params, shape(service, operation))
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("spot", [False, True])
def test_the_launch_request_is_a_valid_run_instances_call(spot):
    spec = instance.LaunchSpec("t1", "g4dn.xlarge", "ami-0123456789abcdef0", "/dev/sda1", 100,
                               "sdtui-t1", "sdtui-t1", "sg-0123456789abcdef0", spot,
                               user_data="#cloud-config\n{}\n")
    request = instance.launch_request(spec, "subnet-0123456789abcdef0")
    validate("ec2", "RunInstances", request)
    assert request["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                                          "HttpEndpoint": "enabled"}


def test_the_ssh_rule_and_bucket_settings_are_valid_calls():
    validate("ec2", "AuthorizeSecurityGroupIngress",
             {"GroupId": "sg-1", "IpPermissions": [access.ssh_rule("203.0.113.7/32")]})
    validate("s3", "PutPublicAccessBlock",
             {"Bucket": "b", "PublicAccessBlockConfiguration": PUBLIC_ACCESS_BLOCK})
    validate("s3", "PutBucketOwnershipControls", {"Bucket": "b", "OwnershipControls": OWNERSHIP})
    validate("s3", "PutBucketEncryption",
             {"Bucket": "b", "ServerSideEncryptionConfiguration": DEFAULT_ENCRYPTION})


@pytest.mark.parametrize("bucket", ["my-models", "models.example.com"])
def test_the_role_policies_pass_the_iam_policy_grammar(bucket):
    IAMTrustPolicyDocumentValidator(json.dumps(iam.TRUST_POLICY)).validate()
    IAMPolicyDocumentValidator(json.dumps(iam.read_bucket_policy(bucket))).validate()
    validate("iam", "PutRolePolicy", {"RoleName": "sdtui-t1-role",
                                      "PolicyName": "sdtui-read-model-bucket",
                                      "PolicyDocument": json.dumps(iam.read_bucket_policy(bucket))})
