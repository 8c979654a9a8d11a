"""The scale-out's checks and steps. `preflight` only reads (credentials, the bucket and its
owner, the model's keys, the GPU quota), so every bad input is refused before anything exists;
then each step is idempotent and skipped when its work is already done."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from sdtui.deploy.aws import bucket, ecr, iam, upload
from sdtui.deploy.aws.naming import TAG_KEY, error_code, tags
from sdtui.deploy.aws.session import Identity, SessionClients, identity
from sdtui.deploy.base import Step, StepContext
from sdtui.deploy.batch import (
    compute,
    fetch,
    jobdef,
    launch_template,
    models,
    names,
    network,
    policies,
    quota,
    runs,
)
from sdtui.deploy.batch import queue as job_queue
from sdtui.deploy.batch.settings import BatchSettings
from sdtui.errors import BadInput
from sdtui.ledger import Ledger, list_ledgers


@dataclass(frozen=True)
class Preflight:
    who: Identity
    bucket_exists: bool
    files: models.ModelFiles
    quota: quota.Quota


class BatchSteps(SessionClients):
    """The state the checks and steps share: settings, ledger, lazily made clients."""

    def __init__(self, settings: BatchSettings, ledger: Ledger, *,
                 sleep: Callable[[float], None] = time.sleep,
                 warn: Callable[[str], None] = lambda line: None) -> None:
        self.settings, self.ledger = settings, ledger
        self.sleep, self.warn = sleep, warn

    # --- checks (read only) ------------------------------------------------------------------

    def preflight(self) -> Preflight:
        s = self.settings
        who = identity(self.session)
        exists = self._bucket_is_ours()
        sets = s.bucket_sets()  # the hub's API only: no model byte comes here
        files = (models.fetched(sets, s.models) if sets
                 else models.plan(self.client("s3"), s.bucket, exists, s.models))
        found = quota.check(self.client("service-quotas"), s.gpus, s.spot, str(s.region),
                            warn=self.warn)
        self._names_are_free_or_ours()
        return Preflight(who, exists, files, found)

    def _names_are_free_or_ours(self) -> None:
        """BadInput when a resource of ours by name exists without our tag (never touched)."""
        name = self.settings.name
        compute.describe(self.client("batch"), name)
        job_queue.describe(self.client("batch"), name)
        ecr.describe(self.client("ecr"), name)
        launch_template.find(self.client("ec2"), name)

    def _bucket_is_ours(self) -> bool:
        """False when it does not exist yet (it will be created); BadInput when it exists and
        neither carries our tag nor is recorded in a ledger of ours."""
        s3, name = self.client("s3"), self.settings.bucket
        if not bucket.bucket_exists_for_us(s3, name):
            return False
        try:
            tagged = bucket.deployment_tag(s3, name)
        except ClientError as exc:
            if error_code(exc) not in {"AccessDenied", "403"}:
                raise
            tagged = None
        recorded = any(e.id == name for ledger in list_ledgers()
                       for e in ledger.resources("bucket"))
        if tagged is None and not recorded:
            raise BadInput(
                f"bucket {name!r} exists but is not sdtui's (no {bucket.TAG_KEY} tag, and no "
                "deployment of yours recorded it)",
                fix="pass the bucket sdtui made for Option A, or a new name for sdtui to create")
        return True

    # --- steps -------------------------------------------------------------------------------

    def steps(self, pre: Preflight) -> list[Step]:
        s = self.settings
        bucket_step = Step("bucket", "Private S3 bucket for the model", self.run_bucket,
                           lambda: f"s3://{s.bucket} exists" if pre.bucket_exists else None)
        found: list[Step] = [bucket_step]
        if pre.files.local:
            found.append(Step("upload", "Upload the model files",
                              lambda ctx: self.run_upload(ctx, pre.files)))
        return found + [
            Step("image", "Worker image in a private ECR repository", self.run_image),
            Step("iam", "Job role and instance role",
                 lambda ctx: self.run_iam(ctx, pre)),
            Step("network", "Security group (no inbound) and launch template (IMDSv2)",
                 self.run_network),
            Step("compute", f"Compute environment: 0 to {s.gpus} × {s.instance_type}"
                 + (" (spot)" if s.spot else ""), self.run_compute),
            Step("queue", "Job queue", self.run_queue),
            Step("jobdef", "Job definition: 1 GPU, 4 vCPUs, retried on host failures",
                 self.run_jobdef),
            *self._fetch_step(),
        ]

    def _fetch_step(self) -> list[Step]:
        s, sets = self.settings, self.settings.bucket_sets()
        if not sets:
            return []
        return [Step("fetch", f"Fetch {', '.join(r.ref for r in sets)} into s3://{s.bucket}/"
                     f"models/ with a one-shot job ({sum(r.total for r in sets) / 2**20:.1f} "
                     "MiB)", self.run_fetch,
                     lambda: f"{sum(len(r.files) for r in sets)} file(s) of "
                     f"{'; '.join(r.source for r in sets)} already in s3://{s.bucket}"
                     if fetch.all_present(self.client("s3"), s.bucket, sets) else None)]

    def run_fetch(self, ctx: StepContext) -> str:
        s = self.settings
        return fetch.fetch(ctx, fetch.Clients(self.client), self.ledger, name=s.name,
                           bucket=s.bucket, region=str(s.region),
                           account=str(self.ledger.params.get("account", "")),
                           image=self.ledger.params["image"], sets=s.bucket_sets(),
                           sleep=self.sleep)

    def run_bucket(self, ctx: StepContext) -> str:
        s = self.settings
        outcome = bucket.ensure_bucket(self.client("s3"), s.bucket, str(s.region), s.name,
                                       self.ledger.params.get("account", ""))
        self.ledger.record("bucket", s.bucket, region=s.region, created=outcome == "created")
        return f"s3://{s.bucket} {outcome}"

    def run_upload(self, ctx: StepContext, files: models.ModelFiles) -> str:
        known = {e.id: e.meta for e in self.ledger.resources("object")}
        result = upload.upload_models(
            self.client("s3"), self.settings.bucket, files.local,
            progress=lambda done, total: ctx.progress(done, total, "bytes"),
            check_cancel=ctx.check_cancel, log=ctx.log, known_digests=known)
        for key, meta in result.digests.items():
            if known.get(key) != meta:
                self.ledger.record("object", key, **meta)
        return (f"{len(result.uploaded)} uploaded ({result.bytes_sent} bytes), "
                f"{len(result.skipped)} unchanged")

    def run_image(self, ctx: StepContext) -> str:
        from sdtui.container.build import build_image
        from sdtui.container.docker_engine import connect_engine

        s = self.settings
        engine = connect_engine(s.docker_host)
        try:
            # The cloud image is for the g4dn's x86; the CPU one (tests) for this machine.
            local = build_image(engine, dockerfile=s.dockerfile, base_image=s.base_image,
                                on_log=ctx.log,
                                platform="linux/amd64" if s.dockerfile == "Dockerfile" else None)
            uri = ecr.ensure_repository(self.client("ecr"), s.name)
            self.ledger.record("ecr_repository", names.repository(s.name), uri=uri)
            tag = local.rsplit(":", 1)[1]
            if not s.push:  # tests: moto's ECR takes no push; the engine has the image
                engine.images.get(local).tag(uri, tag)
                outcome = "tagged here only (SDTUI_TEST_ECR_PUSH=0)"
            elif ecr.has_image(self.client("ecr"), s.name, tag):
                outcome = "already in ECR"
            else:
                ecr.push(engine, self.client("ecr"), local, uri, tag, on_log=ctx.log)
                outcome = "pushed"
        finally:
            engine.close()
        self.ledger.set_params(image=f"{uri}:{tag}")
        return f"{uri}:{tag} {outcome}"

    def run_iam(self, ctx: StepContext, pre: Preflight) -> str:
        s, client_ = self.settings, self.client("iam")
        keys = sorted(set(self.ledger.params.get("model_keys", [])) | set(pre.files.keys))
        job_arn = iam.ensure_role_named(
            client_, names.job_role(s.name), policies.job_trust_policy(pre.who.account),
            f"sdtui scale-out {s.name}: reads the model (each run has a role of its own)",
            tags(s.name), inline={names.JOB_POLICY_NAME: policies.job_role_policy(
                s.bucket, keys)})
        self.ledger.record("role", names.job_role(s.name))
        iam.ensure_role_named(
            client_, names.instance_role(s.name), policies.INSTANCE_TRUST_POLICY,
            f"sdtui scale-out {s.name}: the GPU instances' ECS agent", tags(s.name),
            managed=[policies.ecs_instance_policy_arn()])
        self.ledger.record("role", names.instance_role(s.name))
        profile_arn = iam.ensure_instance_profile_named(
            client_, names.instance_profile(s.name), names.instance_role(s.name), tags(s.name))
        self.ledger.record("instance_profile", names.instance_profile(s.name))
        self.ledger.set_params(model_keys=keys, job_role_arn=job_arn,
                               instance_profile_arn=profile_arn)
        return f"{names.job_role(s.name)} may read {len(keys)} model key(s)"

    def run_access(self, run: str, account: str) -> str:
        """The run's own role: the model, and that run's prompts and outputs only (a shard of
        one run cannot read or write another's); returns its ARN."""
        s = self.settings
        role = names.run_role(s.name, run)
        arn = iam.ensure_role_named(
            self.client("iam"), role, policies.job_trust_policy(account),
            f"sdtui scale-out {s.name}: run {run} reads the model and its prompts, writes "
            "its images", [*tags(s.name), {"Key": runs.RUN_TAG, "Value": run}],
            inline={names.RUN_POLICY_NAME: policies.run_role_policy(
                s.bucket, self.ledger.params.get("model_keys", []), run)},
            path=names.run_role_path(s.name))
        self.ledger.record("role", role, run=run)
        return arn

    def end_run_access(self, run: str) -> None:
        """Once a run is over: its job definition deregistered and its role deleted (only a
        role this ledger recorded creating that carries our tag)."""
        name, role = self.settings.name, names.run_role(self.settings.name, run)
        if not any(e.id == role for e in self.ledger.resources("role")):
            return  # already done
        try:
            jobdef.deregister_run(self.client("batch"), name, run)
            if iam.role_tagged(self.client("iam"), role, TAG_KEY, name):
                iam.delete_role_named(self.client("iam"), role)
        except (ClientError, BotoCoreError) as exc:  # teardown tries again; the run is done
            self.warn(f"could not remove run {run}'s role and job definition yet: {exc}")
            return
        self.ledger.forget("role", role)

    def run_network(self, ctx: StepContext) -> str:
        s, ec2 = self.settings, self.client("ec2")
        group = network.ensure_security_group(ec2, s.name)
        self.ledger.record("security_group", group)
        template, version = launch_template.ensure(ec2, s.name, s.volume_gb)
        self.ledger.record("launch_template", template)
        subnets = network.subnets(ec2)
        self.ledger.set_params(security_group=group, launch_template=template,
                               launch_template_version=version, subnets=subnets)
        return f"group {group}, template {template} v{version}, {len(subnets)} subnet(s)"

    def run_compute(self, ctx: StepContext) -> str:
        s, p = self.settings, self.ledger.params
        params = compute.environment_params(
            s.name, instance_type=s.instance_type, spot=s.spot, shards=s.gpus,
            subnets=p["subnets"], security_group=p["security_group"],
            instance_profile_arn=p["instance_profile_arn"],
            launch_template_id=p["launch_template"],
            launch_template_version=p["launch_template_version"],
            service_role_arn=compute.service_role_arn(self.client("iam")))
        environment = names.compute_environment(s.name)
        arn = compute.ensure(
            self.client("batch"), s.name, params,
            recorded=any(e.id == environment for e in self.ledger.resources(
                "compute_environment")),
            on_create=lambda made: self.ledger.record("compute_environment", environment,
                                                      arn=made),
            sleep=self.sleep)
        self.ledger.record("compute_environment", environment, arn=arn)
        self.ledger.set_params(compute_environment_arn=arn, instance_type=s.instance_type,
                               spot=s.spot)
        return f"{arn}: up to {compute.max_vcpus(s.gpus)} vCPUs, none while idle"

    def run_queue(self, ctx: StepContext) -> str:
        s = self.settings
        arn = job_queue.ensure(self.client("batch"), s.name, job_queue.queue_params(
            s.name, self.ledger.params["compute_environment_arn"]), sleep=self.sleep)
        self.ledger.record("job_queue", names.job_queue(s.name), arn=arn)
        return arn

    def run_jobdef(self, ctx: StepContext) -> str:
        s, p = self.settings, self.ledger.params
        arn = jobdef.ensure(self.client("batch"), s.name, jobdef.definition_params(
            s.name, image=p["image"], job_role_arn=p["job_role_arn"]))
        self.ledger.record("job_definition", names.job_definition(s.name), arn=arn)
        return arn
