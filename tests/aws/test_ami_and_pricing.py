"""The AMI lookup (SSM parameter, then describe_images) and the price of the instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber

from sdtui.deploy.aws import ami, pricing
from sdtui.errors import BadInput

from .conftest import DLAMI


def test_the_ssm_parameter_names_the_ami(aws):
    # moto reserves /aws/... names, so the public parameter is stood in for by our own name.
    aws["ssm"].put_parameter(Name="/test/dlami/ami-id", Value=DLAMI, Type="String")
    found = ami.resolve_ami(aws["ssm"], aws["ec2"], parameter="/test/dlami/ami-id")
    assert (found.image_id, found.source, found.root_device_name) == (DLAMI, "ssm", "/dev/sda1")


def test_without_the_parameter_describe_images_finds_the_dlami(aws):
    found = ami.resolve_ami(aws["ssm"], aws["ec2"])  # moto has no public DLAMI parameter
    assert (found.image_id, found.source) == (DLAMI, "describe_images")
    assert found.name.startswith("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)")


def test_a_pinned_ami_wins(aws):
    other = aws["ec2"].describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    assert ami.resolve_ami(aws["ssm"], aws["ec2"], other).image_id == other


def test_a_pinned_ami_that_is_missing_is_bad_input(aws):
    with pytest.raises(BadInput, match="does not exist"):
        ami.resolve_ami(aws["ssm"], aws["ec2"], "ami-00000000000000000")


def test_the_on_demand_price_comes_from_the_pricing_api():
    client = boto3.client("pricing", region_name="us-east-1")
    product = ('{"product": {}, "terms": {"OnDemand": {"X.Y": {"priceDimensions": '
               '{"X.Y.Z": {"unit": "Hrs", "pricePerUnit": {"USD": "0.5260000000"}}}}}}}')
    with Stubber(client) as stub:
        stub.add_response("get_products", {"PriceList": [product]})
        price = pricing.hourly_price("g4dn.xlarge", "eu-west-1", spot=False, pricing=client)
    assert price == pricing.Price(0.526, "pricing-api")


def test_a_failing_pricing_api_falls_back_to_the_table():
    client = boto3.client("pricing", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("get_products", "AccessDeniedException")
        price = pricing.hourly_price("g5.xlarge", "us-east-1", spot=False, pricing=client)
    assert price == pricing.Price(1.006, "built-in table")


def test_the_spot_price_comes_from_the_price_history():
    ec2 = boto3.client("ec2", region_name="us-east-1")
    with Stubber(ec2) as stub:
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"SpotPrice": "0.2100", "AvailabilityZone": "us-east-1a"},
            {"SpotPrice": "0.1900", "AvailabilityZone": "us-east-1b"},
        ]})
        price = pricing.hourly_price("g4dn.xlarge", "us-east-1", spot=True, ec2=ec2)
    assert price == pricing.Price(0.19, "spot-price")


def test_cost_so_far_bills_per_second_with_a_one_minute_minimum():
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert pricing.cost_so_far(now - timedelta(hours=2), 0.526, now) == 1.052
    assert pricing.cost_so_far(now - timedelta(seconds=5), 3.6, now) == 0.06
    update = pricing.cost_update(now - timedelta(minutes=30), 0.526, idle_stop_in_s=600, now=now)
    assert (update.hourly_usd, update.so_far_usd, update.idle_stop_in_s) == (0.526, 0.263, 600)
