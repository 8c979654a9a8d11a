"""What an Option A launch costs and how long it takes, said before anything is created: the
instance's hourly price (pricing.py), the cold-start estimate (the README's table, which a
test keeps equal to COLD_START) and the idle auto-stop."""

from __future__ import annotations

from sdtui.deploy.aws.pricing import Price, hourly_price

# (step, then the fastest and slowest seconds of a first launch, of a relaunch on a new instance
# with the image in ECR, and of the restart of a stopped instance) on a g4dn.xlarge: the
# README's "Cold start" table (a test keeps the two equal).
COLD_START: tuple[tuple[str, int, int, int, int, int, int], ...] = (
    ("instance boot to sshd answering, cloud-init done", 45, 70, 45, 70, 30, 50),
    ("bootstrap: install s3fs, mount, GPU probe", 20, 40, 20, 40, 5, 10),
    ("image build on the instance", 120, 180, 0, 0, 0, 0),
    ("image push to ECR", 90, 180, 0, 0, 0, 0),
    ("image pull from ECR", 0, 0, 40, 80, 0, 0),
    ("first model read through s3fs", 25, 45, 25, 45, 25, 45),
    ("model to GPU and first image", 15, 15, 15, 15, 15, 15),
)
KINDS = ("first", "relaunch", "restart")


def cold_start_s(kind: str = "first") -> tuple[int, int]:
    """The fastest and slowest cold start of a first launch (the image built and pushed), a
    relaunch (a new instance pulls the image) or the restart of a stopped instance."""
    low = 1 + 2 * KINDS.index(kind)
    return sum(s[low] for s in COLD_START), sum(s[low + 1] for s in COLD_START)


def _minutes(seconds: int) -> str:
    return f"{seconds / 60:.1f}".removesuffix(".0")


def cold_start_text(kind: str = "first") -> str:
    """A cold start as the form and the README say it, e.g. "5.2–8.8 min"."""
    fastest, slowest = cold_start_s(kind)
    return f"{_minutes(fastest)}–{_minutes(slowest)} min"


def asked_price(instance_type: str, region: str | None, *, spot: bool,
                profile: str | None = None) -> Price:
    """The price AWS quotes now (the current spot price, or the Pricing API's on-demand
    price), asked briefly; the built-in table when AWS does not answer."""
    from sdtui.deploy.aws.session import PRICING_CONFIG, make_session, pricing_client

    region = region or "us-east-1"
    try:
        session = make_session(profile, region)
    except Exception:  # a missing profile: the identity check says so
        return hourly_price(instance_type, region, spot=spot)
    if spot:
        ec2 = session.client("ec2", region_name=region, config=PRICING_CONFIG)
        return hourly_price(instance_type, region, spot=True, ec2=ec2)
    return hourly_price(instance_type, region, spot=False, pricing=pricing_client(session))


def launch_line(instance_type: str, region: str | None, *, spot: bool, idle_minutes: int | None,
                price: Price | None = None) -> str:
    """One line: the hourly price, the cold start and the idle auto-stop. `price` is a price
    asked from AWS; without one, the built-in table's on-demand price (for spot, an upper
    bound: spot is cheaper)."""
    price = price or hourly_price(instance_type, region or "us-east-1", spot=spot)
    if price.source == "unknown":
        cost = f"{instance_type}: price unknown"
    elif spot and price.source != "spot-price":
        cost = f"{instance_type} spot ≤ ${price.hourly_usd:.3f}/h (on-demand price)"
    else:
        cost = f"{instance_type} {'spot' if spot else 'on-demand'} ${price.hourly_usd:.3f}/h"
    line = (f"{cost} · cold start ≈ {cold_start_text()} "
            f"(a relaunch {cold_start_text('relaunch')}, a restart {cold_start_text('restart')})")
    if idle_minutes:
        idle_cost = price.hourly_usd * idle_minutes / 60
        line += f" · idle auto-stop after {idle_minutes} min"
        if price.source != "unknown":
            line += f" (≤ ${idle_cost:.2f} idle)"
    return line
