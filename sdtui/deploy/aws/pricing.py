"""What the instance costs: the on-demand price from the Pricing API or the current spot price,
a built-in table when neither answers, and the running total since launch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from sdtui.deploy.base import CostUpdate

# us-east-1 Linux on-demand USD/hour; only used when the Pricing API cannot be asked.
FALLBACK_HOURLY = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g4dn.16xlarge": 4.352,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.16xlarge": 4.096,
    "g5.24xlarge": 8.144,
    "g6.xlarge": 0.805,
    "g6.2xlarge": 0.978,
    "g6.4xlarge": 1.323,
    "g6.8xlarge": 2.014,
    "g6e.xlarge": 1.861,
    "g6e.2xlarge": 2.242,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p3.16xlarge": 24.48,
    "p4d.24xlarge": 32.773,
}
MINIMUM_BILLED_S = 60  # per-second billing, one minute minimum


@dataclass(frozen=True)
class Price:
    hourly_usd: float
    source: str  # "pricing-api", "spot-price", "built-in table" or "unknown"


def on_demand_price(pricing, instance_type: str, region: str) -> float | None:
    filters = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    reply = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        MaxResults=10,
    )
    for item in reply.get("PriceList", []):
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0))
                if usd > 0:
                    return usd
    return None


def spot_price(ec2, instance_type: str, zone: str | None = None) -> float | None:
    kwargs: dict = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": datetime.now(UTC),
    }
    if zone:
        kwargs["AvailabilityZone"] = zone
    history = ec2.describe_spot_price_history(**kwargs).get("SpotPriceHistory", [])
    prices = [float(entry["SpotPrice"]) for entry in history]
    return min(prices) if prices else None


def hourly_price(
    instance_type: str, region: str, *, spot: bool, pricing=None, ec2=None, zone: str | None = None
) -> Price:
    """Ask AWS, and fall back to the built-in table on any failure: a price is informative,
    never a reason to stop a deployment."""
    try:
        if spot and ec2 is not None:
            usd = spot_price(ec2, instance_type, zone)
            source = "spot-price"
        elif not spot and pricing is not None:
            usd = on_demand_price(pricing, instance_type, region)
            source = "pricing-api"
        else:
            usd = source = None
        if usd is not None:
            return Price(usd, str(source))
    except (ClientError, BotoCoreError, ValueError, KeyError):
        pass
    if instance_type in FALLBACK_HOURLY:
        return Price(FALLBACK_HOURLY[instance_type], "built-in table")
    return Price(0.0, "unknown")


def cost_so_far(launch_time: datetime, hourly_usd: float, now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    seconds = max((now - launch_time).total_seconds(), MINIMUM_BILLED_S)
    return round(hourly_usd * seconds / 3600, 4)


def cost_update(
    launch_time: datetime, hourly_usd: float, *, idle_stop_in_s: int | None = None,
    now: datetime | None = None,
) -> CostUpdate:
    """The event front ends show: call it on launch and then periodically."""
    return CostUpdate(
        hourly_usd=hourly_usd,
        so_far_usd=cost_so_far(launch_time, hourly_usd, now),
        idle_stop_in_s=idle_stop_in_s,
    )
