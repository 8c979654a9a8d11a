"""Option A's AWS steps, in order: each idempotent, each skipped when the ledger and a describe
call show its work is already done. The AMI is resolved right after the identity because it
only reads, so a bad --ami fails before anything is created."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from sdtui.deploy.aws import access, ami, bucket, ecr, iam, image, instance, pricing, upload
from sdtui.deploy.aws.naming import instance_profile_name, key_pair_name
from sdtui.deploy.aws.session import (
    SessionClients,
    identity,
    launch_client,
    pricing_client,
)
from sdtui.deploy.aws.settings import AwsSettings
from sdtui.deploy.base import CostUpdate, Step, StepContext
from sdtui.deploy.kept_model import kept_note, model_gone
from sdtui.errors import BadInput
from sdtui.ledger import Ledger

OnCost = Callable[[CostUpdate], None]


class AwsRun(SessionClients):
    """The state the steps share: settings, ledger, and lazily made clients."""

    def __init__(self, settings: AwsSettings, ledger: Ledger, *,
                 public_ip: Callable[[], str] = access.detect_public_ip,
                 on_cost: OnCost | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 user_data: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self._user_data = user_data
        self.ledger = ledger
        self._public_ip = public_ip
        self.on_cost = on_cost
        self.sleep = sleep

    @cached_property
    def ssh_cidr(self) -> str:
        return self.settings.ssh_cidr or self._public_ip()

    # --- identity ---------------------------------------------------------------------------

    def run_identity(self, ctx: StepContext) -> str:
        who = identity(self.session)
        s = self.settings
        # Read only: a repository of this name that is not ours is refused before anything is
        # created (the repository step itself comes after the bucket and the role).
        ecr.describe(self.client("ecr"), s.name)
        fetched = s.fetched_model()
        self.ledger.set_params(
            account=who.account, region=s.region, bucket=s.bucket, instance_type=s.instance_type,
            spot=s.spot, idle_minutes=s.idle_minutes, profile=s.profile,
            models=[str(m) if fetched else str(Path(m).expanduser().absolute())
                    for m in s.models], base_image=s.base_image, ssh_cidr=s.ssh_cidr,
            fetched=[r.record() for r in s.bucket_sets()] or None,
        )
        return f"{who.arn} in {s.region}"

    # --- ami --------------------------------------------------------------------------------

    def ami_done(self) -> str | None:
        p = self.ledger.params
        image_id = p.get("ami_id")
        if not image_id or (self.settings.ami and self.settings.ami != image_id):
            return None
        if ami.describe_image(self.client("ec2"), image_id) is None:
            return None
        return f"{image_id} ({p.get('ami_name', '')})"

    def run_ami(self, ctx: StepContext) -> str:
        image = ami.resolve_ami(self.client("ssm"), self.client("ec2"), self.settings.ami)
        self.ledger.set_params(
            ami_id=image.image_id, ami_name=image.name, root_device_name=image.root_device_name
        )
        return f"{image.image_id} ({image.name}, from {image.source})"

    # --- bucket -----------------------------------------------------------------------------

    def bucket_done(self) -> str | None:
        entry = self.ledger.get("bucket")
        if entry is None or entry.id != self.settings.bucket:
            return None
        s3 = self.client("s3")
        if (bucket.bucket_exists_for_us(s3, entry.id) and bucket.settings_ok(s3, entry.id)
                and bucket.region_of(s3, entry.id) == str(self.settings.region)):
            return f"s3://{entry.id} exists, private and encrypted"
        return None

    def run_bucket(self, ctx: StepContext) -> str:
        s = self.settings
        s3 = self.client("s3")
        entry = next((e for e in self.ledger.resources("bucket") if e.id == s.bucket), None)
        ours = bool(entry and entry.meta.get("created"))
        exists = bucket.bucket_exists_for_us(s3, s.bucket)
        if exists:  # refused before anything is created or launched
            bucket.check_region(s3, s.bucket, str(s.region))
        creating = not ours and not exists
        if creating:  # recorded first, so a crash right after creating it loses nothing
            ours = True
            self.ledger.record("bucket", s.bucket, region=s.region, created=True)
        try:
            outcome = bucket.ensure_bucket(s3, s.bucket, str(s.region), s.name,
                                           self.ledger.params["account"], ours=ours)
        except BadInput:  # the name belongs to another account: nothing was created
            if creating:
                self.ledger.forget("bucket", s.bucket)
            raise
        self.ledger.record("bucket", s.bucket, region=s.region, created=ours)
        if not ours:
            return f"s3://{s.bucket} is yours (not created by sdtui): used, never deleted"
        return f"s3://{s.bucket} {outcome}"

    # --- upload -----------------------------------------------------------------------------

    def run_upload(self, ctx: StepContext) -> str:
        known = {e.id: e.meta for e in self.ledger.resources("object")}
        kept = self.settings.kept_objects()
        if kept and upload.missing_in_bucket(self.client("s3"), self.settings.bucket, kept):
            raise model_gone(self.settings.models[0], "the bucket no longer holds its copy")
        result = upload.upload_models(
            self.client("s3"), self.settings.bucket, self.settings.uploads(),
            progress=lambda done, total: ctx.progress(done, total, "bytes"),
            check_cancel=ctx.check_cancel, log=ctx.log, known_digests=known,
            model_kept=bool(kept),
        )
        for key, meta in result.digests.items():
            if known.get(key) != meta:
                self.ledger.record("object", key, **meta)
        note = f"; {kept_note(Path(self.settings.models[0]).name, 'bucket')}" if kept else ""
        return (f"{len(result.uploaded)} uploaded ({result.bytes_sent} bytes), "
                f"{len(result.skipped)} unchanged{note}")

    # --- iam --------------------------------------------------------------------------------

    def iam_done(self) -> str | None:
        if self.ledger.get("instance_profile") is None:
            return None
        if iam.role_ready(self.client("iam"), self.settings.name, self.settings.bucket):
            return f"instance profile {instance_profile_name(self.settings.name)} is ready"
        return None

    def run_iam(self, ctx: StepContext) -> str:
        s = self.settings
        role, profile = iam.ensure_role(self.client("iam"), s.name, s.bucket)
        self.ledger.record("role", role)
        self.ledger.record("instance_profile", profile)
        return f"role {role} may read s3://{self.settings.bucket}"

    # --- repository -------------------------------------------------------------------------

    def repository_done(self) -> str | None:
        entry = self.ledger.get("ecr_repository")
        if entry is None or ecr.describe(self.client("ecr"), self.settings.name) is None:
            return None
        return f"{entry.meta.get('uri', entry.id)} exists"

    def run_repository(self, ctx: StepContext) -> str:
        uri = image.ensure_repository(self.client("ecr"), self.settings.name, self.ledger)
        return f"{uri}: the worker image, built once and pulled by later launches"

    # --- access -----------------------------------------------------------------------------

    def access_done(self) -> str | None:
        ec2, name = self.client("ec2"), self.settings.name
        if (self.ledger.get("security_group") and access.key_pair_ready(ec2, name)
                and access.security_group_ready(ec2, name, self.ssh_cidr)):
            return f"key pair and SSH from {self.ssh_cidr} only"
        return None

    def run_access(self, ctx: StepContext) -> str:
        ec2, name = self.client("ec2"), self.settings.name
        key = access.ensure_key_pair(ec2, name)
        self.ledger.record("key_pair", key.name, private_key=str(key.private_key))
        group_id = access.ensure_security_group(ec2, name, self.ssh_cidr)
        self.ledger.record("security_group", group_id, ssh_cidr=self.ssh_cidr)
        return f"key {key.name}, group {group_id}: SSH from {self.ssh_cidr} only"

    # --- instance ---------------------------------------------------------------------------

    def instance_done(self) -> str | None:
        entry = self.ledger.get("instance")
        if entry is None:
            return None
        found = instance.find_instance(self.client("ec2"), self.settings.name)
        if found is None or found["InstanceId"] != entry.id or found["State"]["Name"] != "running":
            return None
        self._report_cost(found)
        return f"{entry.id} is running at {found.get('PublicIpAddress', '?')}"

    def run_instance(self, ctx: StepContext) -> str:
        s, p = self.settings, self.ledger.params
        group = self.ledger.get("security_group")
        spec = instance.LaunchSpec(
            name=s.name, instance_type=s.instance_type, image_id=p["ami_id"],
            root_device_name=p.get("root_device_name", "/dev/sda1"), volume_gb=s.volume_gb,
            instance_profile=instance_profile_name(s.name), key_name=key_pair_name(s.name),
            security_group_id=group.id if group else "", spot=s.spot,
            user_data=self._user_data() if self._user_data else "",
        )
        found = instance.ensure_instance(self.client("ec2"), spec, log=ctx.log, sleep=self.sleep,
                                         launcher=launch_client(self.session))
        zone = found.get("Placement", {}).get("AvailabilityZone")
        self.ledger.record("instance", found["InstanceId"], zone=zone,
                           instance_type=s.instance_type, spot=s.spot)
        price = self._report_cost(found)
        return (f"{found['InstanceId']} running in {zone} at {found.get('PublicIpAddress', '?')}, "
                f"${price.hourly_usd:.3f}/h ({price.source})")

    def _report_cost(self, found: dict) -> pricing.Price:
        s = self.settings
        price = pricing.hourly_price(
            s.instance_type, str(s.region), spot=s.spot,
            pricing=pricing_client(self.session),
            ec2=self.client("ec2"), zone=found.get("Placement", {}).get("AvailabilityZone"),
        )
        self.ledger.set_params(hourly_usd=price.hourly_usd, price_source=price.source)
        if self.on_cost is not None:
            launched = found.get("LaunchTime") or datetime.now(UTC)
            self.on_cost(pricing.cost_update(launched, price.hourly_usd))
        return price


def aws_steps(
    settings: AwsSettings,
    ledger: Ledger,
    *,
    public_ip: Callable[[], str] = access.detect_public_ip,
    on_cost: OnCost | None = None,
    sleep: Callable[[float], None] = time.sleep,
    user_data: Callable[[], str] | None = None,
) -> list[Step]:
    """Validate locally (raises BadInput before anything is called), then the ordered steps.
    `user_data` is called once, at launch, for the instance's cloud-init user data."""
    settings.validate()
    run = AwsRun(settings, ledger, public_ip=public_ip, on_cost=on_cost, sleep=sleep,
                 user_data=user_data)
    return [
        Step("identity", "Check AWS credentials", run.run_identity),
        Step("ami", "Find the Deep Learning GPU AMI", run.run_ami, run.ami_done),
        Step("bucket", "Private S3 bucket for the model", run.run_bucket, run.bucket_done),
        *([Step("upload", "Upload the model files", run.run_upload)]
          if settings.uploads() else []),
        Step("iam", "Instance role that may read the bucket", run.run_iam, run.iam_done),
        Step("repository", "Private ECR repository for the worker image", run.run_repository,
             run.repository_done),
        Step("access", "SSH key and security group", run.run_access, run.access_done),
        Step("instance", f"Launch the {settings.instance_type} instance", run.run_instance,
             run.instance_done),
    ]
