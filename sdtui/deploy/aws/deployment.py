"""Option A as a Deployment: the AWS steps, then the host bootstrap over SSH, the worker image
built on the instance and the worker container run there, all through the Docker SDK over
ssh:// with the deployment's pinned host key; the same WorkerClient streams the images back."""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import docker
from botocore.exceptions import BotoCoreError, ClientError
from docker.types import Mount

from sdtui.deploy import worker_container
from sdtui.deploy.aws import access, iam, image, instance, pricing, remote_fetch, ssh
from sdtui.deploy.aws import teardown as aws_teardown
from sdtui.deploy.aws.bootstrap import (
    HostPlan,
    bootstrap_script,
    host_plan_from_env,
    idle_probe_command,
)
from sdtui.deploy.aws.docker_ssh import docker_over_ssh
from sdtui.deploy.aws.heartbeat import HostHeartbeat, touch_command
from sdtui.deploy.aws.naming import MODELS_PREFIX
from sdtui.deploy.aws.session import client, make_session
from sdtui.deploy.aws.settings import AwsSettings
from sdtui.deploy.aws.steps import aws_steps
from sdtui.deploy.base import (
    CostUpdate,
    Deployment,
    DeploymentStatus,
    OnEvent,
    Resource,
    Step,
    StepContext,
    StepFinished,
    StepLog,
    StepStarted,
    TeardownReport,
    run_steps,
)
from sdtui.deploy.worker_steps import WorkerSteps
from sdtui.errors import BadInput, DeploymentError, SdtuiError
from sdtui.fetch import to_bucket
from sdtui.ledger import Ledger
from sdtui.worker import spool

DEFAULT_NAME = "aws"
STATUS_SSH_WAIT_S = 5


class AwsDeployment(WorkerSteps, Deployment):
    option = "aws"

    def __init__(self, settings: AwsSettings, *, purge_bucket: bool = False,
                 public_ip: Callable[[], str] = access.detect_public_ip,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.name = settings.name
        self.purge_bucket = purge_bucket  # --purge-bucket, honoured by teardown()
        self.ledger = Ledger.open(settings.name, "aws")
        self._public_ip = public_ip
        self._sleep = sleep
        self.heartbeat = HostHeartbeat
        self._on_event: OnEvent = lambda event: None
        self._engine: docker.DockerClient | None = None
        self.dockerfile = settings.dockerfile
        self.base_image = settings.base_image

    # --- helpers -----------------------------------------------------------------------------

    @cached_property
    def session(self):  # noqa: ANN201
        return make_session(self.settings.profile, str(self.settings.region))

    @cached_property
    def ec2(self):  # noqa: ANN201
        return client(self.session, "ec2")

    def _emit(self, event: CostUpdate | StepLog) -> None:
        self._on_event(event)

    def _find_running(self) -> dict:
        """Our instance, running; a clear error (spot interruption included) otherwise."""
        found = instance.find_instance(self.ec2, self.name)
        if found is None:
            entry = self.ledger.get("instance")
            if entry is not None:
                with contextlib.suppress(ClientError, IndexError):
                    if message := instance.spot_interruption(instance.describe(self.ec2, entry.id)):
                        raise DeploymentError(message, fix="run sdtui again to launch a new one")
            raise BadInput(f"deployment {self.name!r} has no instance",
                           fix="run sdtui --no-ui --option aws with --model and --bucket to "
                           "provision it")
        state = found["State"]["Name"]
        if state != "running":
            raise DeploymentError(
                f"instance {found['InstanceId']} is {state} (the idle auto-stop stops it after "
                f"{self.settings.idle_minutes} idle minutes)",
                fix="run sdtui again with a prompt to start it and reattach",
            )
        return found

    def _target(self, found: dict) -> ssh.SshTarget:
        return ssh.instance_target(found.get("PublicIpAddress"))

    def _open_ssh(self, target: ssh.SshTarget, *, wait_s: float = ssh.CONNECT_WAIT_S,
                  log: Callable[[str], None] = lambda line: None):  # noqa: ANN202
        known_hosts = ssh.pin_host_key(self.name, target)
        return ssh.open_ssh(target, access.private_key_path(self.name), known_hosts,
                            wait_s=wait_s, log=log, sleep=self._sleep)

    def host_plan(self, target: ssh.SshTarget) -> HostPlan:
        # A VPC or FIPS endpoint the caller set for boto3 is used by s3fs as well, still with
        # the instance role: the caller's own credentials are never copied to the instance.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        s = self.settings
        uploaded = sorted(e.id for e in self.ledger.resources("object"))
        return host_plan_from_env(s.bucket, str(s.region), s.idle_minutes, user=target.user,
                                  probe_image=s.base_image, s3_endpoint=endpoint,
                                  probe_key=uploaded[0] if uploaded else None,
                                  probe_listing=self.settings.fetched_model() is not None)

    @property
    def engine(self) -> docker.DockerClient:
        if self._engine is None:
            target = self._target(self._find_running())
            # sshd may still be starting: wait for it here, where the wait is bounded
            self._open_ssh(target).close()
            self._engine = self._docker(target)
        return self._engine

    def _docker(self, target: ssh.SshTarget) -> docker.DockerClient:
        """A new Docker SDK client for the instance's engine, over SSH with the pinned key."""
        return docker_over_ssh(target, access.private_key_path(self.name),
                               ssh.known_hosts_path(self.name))

    def _cost(self, found: dict, idle_stop_in_s: int | None) -> CostUpdate | None:
        hourly = self.ledger.params.get("hourly_usd")
        if hourly is None or "LaunchTime" not in found:
            return None
        return pricing.cost_update(found["LaunchTime"], float(hourly),
                                   idle_stop_in_s=idle_stop_in_s)

    # --- steps -------------------------------------------------------------------------------

    def provision(self, on_event: OnEvent, cancel: threading.Event | None = None) -> None:
        self._on_event = on_event
        run_steps(self.plan(), on_event, cancel, self.explain)

    def plan(self) -> list[Step]:
        steps = aws_steps(self.settings, self.ledger, public_ip=self._public_ip,
                          on_cost=self._emit, sleep=self._sleep,
                          user_data=lambda: ssh.user_data(self.name))
        sets = self.settings.bucket_sets()
        fetch = [Step("fetch", f"Fetch {', '.join(r.ref for r in sets)} on the instance into "
                      f"s3://{self.settings.bucket}/{MODELS_PREFIX} "
                      f"({sum(r.total for r in sets) / 2**20:.1f} MiB)", self._fetch_models,
                      self._models_fetched)] if sets else []
        busy = [Step("image", "Worker image: pulled from ECR, or built on the instance and "
                     "pushed", self._pull_or_build, self._image_ready),
                *fetch, *self.container_steps()]
        return steps + [
            Step("bootstrap", "Prepare the instance: s3fs mount, Docker, GPU, idle stop",
                 self._bootstrap),
            *[Step(s.name, s.title, self._kept_busy(s.run), s.already_done) for s in busy],
        ]

    def _kept_busy(self, run: Callable[[StepContext], str | None]
                   ) -> Callable[[StepContext], str | None]:
        """The image build, the worker's start and the model load send the worker nothing it
        could count as activity: mark the instance busy while they run."""
        def run_busy(ctx: StepContext) -> str | None:
            target = self._target(self._find_running())
            command = touch_command(self.host_plan(target).activity_file,
                                    sudo=target.user != "root")
            with self.heartbeat(lambda: self._open_ssh(target, wait_s=STATUS_SSH_WAIT_S),
                                command):
                return run(ctx)
        return run_busy

    def _bootstrap(self, ctx: StepContext) -> str:
        found = self._find_running()
        target = self._target(found)
        plan = self.host_plan(target)
        errors: list[str] = []

        def on_line(line: str) -> None:
            if line.startswith("ERROR: "):
                errors.append(line.removeprefix("ERROR: "))
            ctx.log(line)

        connection = self._open_ssh(target, log=ctx.log)
        try:
            status = ssh.run_script(connection, bootstrap_script(plan),
                                    sudo=target.user != "root", on_line=on_line)
        finally:
            connection.close()
        if status != 0:
            reason = errors[-1] if errors else f"exit status {status}"
            raise DeploymentError(f"the host bootstrap on {target.host} failed: {reason}",
                                  fix="read the step's output above, then run sdtui again")
        self.ledger.set_params(mount_point=plan.mount_point, outputs_dir=plan.outputs_dir)
        if cost := self._cost(found, self.settings.idle_minutes * 60):
            self._emit(cost)
        return (f"s3://{plan.bucket} read-only at {plan.mount_point}, Docker ready, "
                f"idle stop after {plan.idle_minutes} min")

    def _image_ready(self) -> str | None:
        return self._image_found(image.ready(self.engine, self.ledger, dockerfile=self.dockerfile,
                                             base_image=self.base_image),
                                 "is on the instance and in ECR")

    def _pull_or_build(self, ctx: StepContext) -> str:
        # A connection of its own, closed after: the build's and the push's streams hold SSH
        # sessions of their own for minutes (sshd allows 10 per connection: MaxSessions).
        engine = self._docker(self._target(self._find_running()))
        try:
            found = image.ensure_worker_image(
                engine, client(self.session, "ecr"), self.name, self.ledger,
                dockerfile=self.dockerfile, base_image=self.base_image, on_log=ctx.log)
        finally:
            engine.close()
        self._image = found.tag
        self.ledger.record("image", found.tag)
        return f"{found.tag}: {found.how}"

    def _models_fetched(self) -> str | None:
        sets = self.settings.bucket_sets()
        s3 = client(self.session, "s3")
        if not sets or not all(
                to_bucket.present(s3, self.settings.bucket,
                                  to_bucket.key_of(MODELS_PREFIX, resolved, f), f)
                for resolved in sets for f in resolved.files):
            return None
        return (f"{sum(len(r.files) for r in sets)} file(s) of "
                f"{'; '.join(r.source for r in sets)} already in "
                f"s3://{self.settings.bucket}/{MODELS_PREFIX}")

    def _fetch_models(self, ctx: StepContext) -> str:
        sets = self.settings.bucket_sets()  # planned only for a model named to fetch
        target = self._target(self._find_running())
        staging = self.host_plan(target).path(remote_fetch.STAGING_DIR)
        sudo = "sudo -n " if target.user != "root" else ""
        connection = self._open_ssh(target, log=ctx.log)
        try:
            ssh.run_command(connection, f"{sudo}mkdir -p {shlex.quote(staging)} && {sudo}chown "
                            f"{remote_fetch.WORKER_UID}:{remote_fetch.WORKER_UID} "
                            f"{shlex.quote(staging)}")
        finally:
            connection.close()

        def on_event(event: dict) -> None:
            if event.get("type") == "download_progress":
                ctx.download(str(event.get("file")), int(event.get("done") or 0),
                             event.get("total"), float(event.get("rate") or 0.0),
                             event.get("eta_s"))
            elif event.get("type") == "log":
                ctx.log(str(event.get("message")))

        engine = self._docker(target)
        try:
            with iam.may_write_models(client(self.session, "iam"), self.name,
                                      self.settings.bucket):
                done = remote_fetch.run_fetch(
                    engine, deployment=self.name, image=self._image or "", staging=staging,
                    environment=remote_fetch.environment(str(self.settings.region)),
                    job=remote_fetch.job(self.settings.bucket, MODELS_PREFIX, sets),
                    ledger=self.ledger, on_event=on_event, cancel=ctx.cancel)
        finally:
            engine.close()
        return (f"{len(done.get('fetched', []))} file(s) fetched by the instance "
                f"({int(done.get('bytes') or 0) / 2**20:.1f} MiB), "
                f"{len(done.get('skipped', []))} already there "
                f"({'; '.join(r.source for r in sets)})")

    def _model_in_container(self) -> tuple[str, str | None]:
        """The worker's model path under /data and the model file's sha256."""
        resolved = self.settings.fetched_model()
        if resolved is not None:
            sha = next((f.sha256 for f in resolved.files if f.dest == resolved.model), None)
            return (f"{worker_container.DATA_DIR}/{MODELS_PREFIX}{resolved.root}/"
                    f"{resolved.model}", sha)
        if kept := self.settings.kept_objects():  # gone from this machine: as uploaded
            name = Path(self.settings.models[0]).name
            return f"{worker_container.DATA_DIR}/{name}", kept.get(name, {}).get("sha256")
        models = self.settings.uploads()
        return (worker_container.model_in_container(models), worker_container.model_sha256(
            models, {e.id: str(e.meta.get("sha256")) for e in self.ledger.resources("object")}))

    def worker_spec(self) -> worker_container.WorkerSpec:
        plan = self.host_plan(self._target(self._find_running()))
        model, sha256 = self._model_in_container()
        fetched = self.settings.fetched_model()
        return worker_container.WorkerSpec(
            deployment=self.name,
            image=self._image or "",
            model=model,
            model_sha256=sha256,
            model_source=fetched.pinned if fetched else None,
            data_mount=Mount(worker_container.DATA_DIR, plan.mount_point, type="bind",
                             read_only=True),
            outputs_host_dir=plan.outputs_dir,
            gpu=plan.gpu_probe_image is not None,
        )

    # --- the interface -----------------------------------------------------------------------

    def idle_stop_in_s(self, target: ssh.SshTarget) -> int | None:
        """Seconds until the instance stops itself, read from the activity file's mtime."""
        try:
            connection = self._open_ssh(target, wait_s=STATUS_SSH_WAIT_S)
        except SdtuiError:
            return None
        try:
            idle = int(ssh.run_command(connection, idle_probe_command(self.host_plan(target))))
        except (ValueError, OSError):
            return None
        finally:
            connection.close()
        return max(self.settings.idle_minutes * 60 - idle, 0)

    def cost_update(self) -> CostUpdate | None:
        """What the running instance costs now, with the idle stop countdown; None when it is
        not running. Front ends call it periodically (it asks EC2 and reads the instance's
        activity file over SSH)."""
        try:
            found = self._find_running()
        except SdtuiError:
            return None
        return self._cost(found, self.idle_stop_in_s(self._target(found)))

    def status(self) -> DeploymentStatus:
        ledger = Ledger.load(self.name)
        if ledger is None:
            return DeploymentStatus(self.name, "aws", "absent")
        self.ledger = ledger
        notes = {"bucket": "model files; kept on teardown unless --purge-bucket",
                 "ecr_repository": "worker image for the next launch to pull; kept on teardown "
                 "unless --purge-bucket"}
        resources = [Resource(e.kind, e.id, "recorded", kept_on_teardown=e.kind in notes,
                              note=notes.get(e.kind, ""))
                     for e in ledger.resources() if e.kind not in {"instance", "object"}]
        hourly = ledger.params.get("hourly_usd")
        status = DeploymentStatus(self.name, "aws", "absent", resources,
                                  hourly_usd=float(hourly) if hourly is not None else None)
        try:
            found = instance.find_instance(self.ec2, self.name)
            entry = ledger.get("instance")
            if found is None and entry is not None:
                gone = instance.describe(self.ec2, entry.id)
                if message := instance.spot_interruption(gone):
                    status.state = "interrupted"
                    resources.insert(0, Resource("instance", entry.id, "terminated",
                                                 note=message))
                    return status
        except (ClientError, BotoCoreError, IndexError, SdtuiError) as exc:
            status.state = f"unknown ({exc})"
            return status
        if found is None:
            status.state = "provisioning" if resources else "absent"
            return status
        state = found["State"]["Name"]
        ip = found.get("PublicIpAddress", "no address")
        detail = f"{state}, {ip}"
        if state == "running":
            status.state = "ready" if ledger.get("container") else "provisioning"
            status.idle_stop_in_s = self.idle_stop_in_s(self._target(found))
            if status.idle_stop_in_s is not None:
                detail += f", idle stop in {status.idle_stop_in_s // 60} min"
            if cost := self._cost(found, status.idle_stop_in_s):
                status.cost_so_far_usd = cost.so_far_usd
        else:
            status.state = state
        resources.insert(0, Resource("instance", found["InstanceId"], detail,
                                     note=found.get("InstanceType", "")))
        return status

    def refuse_foreign_purge(self) -> None:
        aws_teardown.refuse_foreign_purge(self.session, self.name, Ledger.load(self.name),
                                          self.settings.bucket)

    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport:
        purge = purge or self.purge_bucket
        if purge:  # refused before anything is deleted
            self.refuse_foreign_purge()
        ledger = Ledger.load(self.name)
        on_event(StepStarted("teardown", f"Tear down {self.name}"))
        started = time.monotonic()

        def log(line: str) -> None:
            on_event(StepLog("teardown", line))

        report = TeardownReport()
        if ledger is not None and ledger.resources("container"):
            self._remove_worker(ledger, log, report)
        found = aws_teardown.teardown(self.session, self.name, ledger, purge_bucket=purge,
                                      log=log, sleep=self._sleep)
        for kind in ("removed", "kept", "left"):
            getattr(report, kind).extend(getattr(found, kind))
        if not any(r.kind == "instance" for r in report.left):
            ssh.delete_host_key(self.name)
        outcome = "failed" if report.left else "done"
        on_event(StepFinished("teardown", outcome, report.summary(), time.monotonic() - started))
        return report

    def _remove_worker(self, ledger: Ledger, log: Callable[[str], None],
                       report: TeardownReport) -> None:
        """The worker container, when the instance can be reached (it goes with the instance
        anyway; removing it first ends its stream cleanly), and a count of the images in its
        spool, which go with the instance's disk."""
        try:
            found = instance.find_instance(self.ec2, self.name)
            if found is None or found["State"]["Name"] != "running":
                return
            target = self._target(found)
            connection = self._open_ssh(target, wait_s=STATUS_SSH_WAIT_S)
            try:
                outputs = ledger.params.get("outputs_dir")
                spooled = int(ssh.run_command(connection, spool_count_command(outputs))
                              or 0) if outputs else 0
            except (ValueError, OSError):
                spooled = 0
            finally:
                connection.close()
            if spooled:
                report.removed.append(Resource("spool", f"{target.host}:{outputs}", note=(
                    f"with the instance: {spooled} image(s) the worker finished that no client "
                    "saved")))
            engine = self._docker(target)
            recorded = {e.id for e in ledger.resources("container")}
            for container in engine.containers.list(
                    all=True, filters={"label": f"{worker_container.LABEL}={self.name}"}):
                if container.name not in recorded:
                    continue  # not ours to delete; it goes with the instance if it is ours
                container.remove(force=True)
                ledger.forget("container", container.name)
                report.removed.append(Resource("container", container.name))
                log(f"removed container {container.name}")
            engine.close()
        except (SdtuiError, ClientError, BotoCoreError, docker.errors.DockerException,
                OSError) as exc:
            log(f"worker container not removed ({exc}); it goes with the instance")


def spool_count_command(outputs_dir: str) -> str:
    """Counts the worker's unsaved images on the host (its spool)."""
    return (f"find {shlex.quote(outputs_dir + '/' + spool.DIR_NAME)} -maxdepth 1 "
            f"-name '*{spool.SUFFIX}' 2>/dev/null | wc -l")
