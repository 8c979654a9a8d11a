"""Errors moto cannot produce, injected into real clients talking to moto over HTTP."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from sdtui.deploy.aws import access, ami, bucket, iam, instance, steps
from sdtui.errors import BadInput, DeploymentError
from sdtui.ledger import Ledger

from .conftest import inject_error
from .helpers import no_public_ip, outcomes, run, settings

ON_DEMAND_VCPU = ("You have requested more vCPU capacity than your current vCPU limit of 0 "
                  "allows for the instance bucket that the specified instance type belongs to.")
SPOT_VCPU = ("Max spot instance count exceeded: You have requested more vCPU capacity than your "
             "current vCPU limit of 0 allows for the Spot instance bucket.")


def launch_spec(aws, spot: bool = False) -> instance.LaunchSpec:
    iam.ensure_role(aws["iam"], "t1", "sdtui-test-models")
    access.ensure_key_pair(aws["ec2"], "t1")
    group = access.ensure_security_group(aws["ec2"], "t1", "203.0.113.7/32")
    image = ami.resolve_ami(aws["ssm"], aws["ec2"])
    return instance.LaunchSpec("t1", "g4dn.xlarge", image.image_id, image.root_device_name,
                               100, "sdtui-t1", "sdtui-t1", group, spot)


def live_instances(aws) -> int:
    return sum(len(r["Instances"]) for r in aws["ec2"].describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"])


def test_on_demand_vcpu_quota_names_the_quota_and_where_to_raise_it(aws):
    spec = launch_spec(aws)
    inject_error(aws["ec2"], "RunInstances", "VcpuLimitExceeded", ON_DEMAND_VCPU)
    with pytest.raises(DeploymentError) as err:
        instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    text = str(err.value)
    assert "Running On-Demand G and VT instances" in text and "L-DB2E81BA" in text
    assert "Service Quotas" in text and "request-service-quota-increase" in text
    assert live_instances(aws) == 0


def test_spot_vcpu_quota_names_the_spot_quota(aws):
    spec = launch_spec(aws, spot=True)
    inject_error(aws["ec2"], "RunInstances", "VcpuLimitExceeded", SPOT_VCPU)
    with pytest.raises(DeploymentError) as err:
        instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    assert "All G and VT Spot Instance Requests" in str(err.value)
    assert "L-3819A6DF" in str(err.value)


def test_no_capacity_tries_every_zone_then_suggests_alternatives(aws):
    spec = launch_spec(aws)
    zones = len(instance.default_subnets(aws["ec2"]))
    calls = inject_error(aws["ec2"], "RunInstances", "InsufficientInstanceCapacity",
                         "We currently do not have sufficient g4dn.xlarge capacity.", times=99)
    logged: list[str] = []
    with pytest.raises(DeploymentError) as err:
        instance.ensure_instance(aws["ec2"], spec, log=logged.append, sleep=lambda s: None)
    assert zones > 1 and len(calls) == zones
    assert "--region" in str(err.value) and "--spot" in str(err.value)
    assert sum("trying another zone" in line for line in logged) == zones


def test_no_capacity_in_one_zone_launches_in_the_next(aws):
    spec = launch_spec(aws)
    inject_error(aws["ec2"], "RunInstances", "InsufficientInstanceCapacity", "none", times=1)
    found = instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    first_zone = instance.default_subnets(aws["ec2"])[0]["AvailabilityZone"]
    assert found["Placement"]["AvailabilityZone"] != first_zone
    assert found["State"]["Name"] == "running"


def test_a_new_instance_profile_is_retried_until_it_propagates(aws):
    spec = launch_spec(aws)
    calls = inject_error(aws["ec2"], "RunInstances", "InvalidParameterValue",
                         "Value (sdtui-t1) for parameter iamInstanceProfile.name is invalid. "
                         "Invalid IAM Instance Profile name", times=3)
    slept: list[float] = []
    found = instance.ensure_instance(aws["ec2"], spec, sleep=slept.append)
    assert len(calls) == 4 and slept == [2, 4, 8]
    assert found["State"]["Name"] == "running" and live_instances(aws) == 1


def test_profile_propagation_retries_are_bounded(aws):
    spec = launch_spec(aws)
    inject_error(aws["ec2"], "RunInstances", "InvalidParameterValue",
                 "Invalid IAM Instance Profile name", times=99)
    with pytest.raises(DeploymentError, match="still not usable"):
        instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)


def test_a_bucket_name_taken_by_another_account_suggests_a_unique_one(aws):
    inject_error(aws["s3"], "CreateBucket", "BucketAlreadyExists",
                 "The requested bucket name is not available.")
    with pytest.raises(BadInput) as err:
        bucket.ensure_bucket(aws["s3"], "taken-name", "us-east-1", "t1", "123456789012")
    assert "taken-name-789012" in str(err.value)
    assert aws["s3"].list_buckets()["Buckets"] == []


def test_a_bucket_we_already_own_is_reused_and_secured(aws):
    aws["s3"].create_bucket(Bucket="mine-already")
    assert bucket.ensure_bucket(aws["s3"], "mine-already", "us-east-1", "t1", "1") == "reused"
    assert bucket.settings_ok(aws["s3"], "mine-already")


def test_a_bucket_outside_us_east_1_gets_its_location(aws):
    s3 = boto3.client("s3", region_name="eu-west-1")
    assert bucket.ensure_bucket(s3, "eu-models", "eu-west-1", "t1", "1") == "created"
    assert s3.get_bucket_location(Bucket="eu-models")["LocationConstraint"] == "eu-west-1"


def test_a_spot_interruption_is_reported(aws):
    stopped = {"InstanceId": "i-1", "State": {"Name": "terminated"},
               "StateReason": {"Code": "Server.SpotInstanceTermination",
                               "Message": "Server.SpotInstanceTermination: Spot instance "
                                          "termination"}}
    assert "interrupted by AWS" in instance.spot_interruption(stopped)
    assert instance.spot_interruption({"InstanceId": "i-2", "State": {"Name": "running"}}) is None


def test_the_launch_request_is_spot_one_time_and_terminates(aws):
    spec = launch_spec(aws, spot=True)
    request = instance.launch_request(spec, "subnet-1")
    assert request["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "one-time",
                        "InstanceInterruptionBehavior": "terminate"},
    }
    found = instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    assert found.get("InstanceLifecycle") == "spot"


def test_the_quota_hint_asks_for_the_vcpus_of_the_instance_type(aws):
    spec = dataclasses.replace(launch_spec(aws), instance_type="g4dn.12xlarge")
    inject_error(aws["ec2"], "RunInstances", "VcpuLimitExceeded", ON_DEMAND_VCPU)
    with pytest.raises(DeploymentError) as err:
        instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    assert "(48 vCPUs)" in str(err.value) and "--desired-value 48" in str(err.value)


def test_a_stopped_instance_without_capacity_in_its_zone_says_to_wait_or_tear_down(aws):
    spec = launch_spec(aws)
    launched = instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    aws["ec2"].stop_instances(InstanceIds=[launched["InstanceId"]])
    inject_error(aws["ec2"], "StartInstances", "InsufficientInstanceCapacity",
                 "We currently do not have sufficient g4dn.xlarge capacity in the Availability "
                 "Zone you requested.")
    with pytest.raises(DeploymentError) as err:
        instance.ensure_instance(aws["ec2"], spec, sleep=lambda s: None)
    zone = launched["Placement"]["AvailabilityZone"]
    assert f"no g4dn.xlarge capacity in {zone}" in str(err.value)
    assert "cannot move to another zone" in str(err.value)
    assert "try again in a few minutes" in err.value.fix and "--teardown" in err.value.fix
    assert instance.describe(aws["ec2"], launched["InstanceId"])["State"]["Name"] == "stopped"


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs):
        yield self.data


def no_capacity_in_first_zone(sends: list[str]):
    """EC2's answer to RunInstances in a zone without capacity: HTTP 500 with
    InsufficientInstanceCapacity. Registered on before-send, inside botocore's retry loop, so
    every retry shows up as another send."""
    error = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            b"<Code>InsufficientInstanceCapacity</Code><Message>We currently do not have "
            b"sufficient g4dn.xlarge capacity in the Availability Zone you requested."
            b"</Message></Error></Errors><RequestID>0</RequestID></Response>")

    def handler(request, **kwargs):
        body_text = request.body if isinstance(request.body, str) else request.body.decode()
        subnet = parse_qs(body_text)["NetworkInterface.1.SubnetId"][0]
        sends.append(subnet)
        if subnet == sends[0]:
            return AWSResponse(request.url, 500, {}, _Body(error))
        return None

    return handler


def test_the_instance_step_leaves_a_zone_without_capacity_at_once(model, aws, monkeypatch):
    """The step launches through a client that does not retry: one RunInstances per zone."""
    sends: list[str] = []
    real = steps.launch_client

    def launcher(session, region=None):
        client = real(session, region)
        client.meta.events.register("before-send.ec2.RunInstances",
                                    no_capacity_in_first_zone(sends))
        return client

    monkeypatch.setattr(steps, "launch_client", launcher)
    ledger = Ledger.open("t1", "aws")
    events = run(steps.aws_steps(settings(model), ledger, public_ip=no_public_ip,
                                 sleep=lambda s: None))
    assert outcomes(events)["instance"] == "done"
    assert len(sends) == 2 and sends[0] != sends[1]  # first zone once, then the next one
    logs = [e.line for e in events if type(e).__name__ == "StepLog"]
    assert any("no g4dn.xlarge capacity" in line and "trying another zone" in line
               for line in logs)
