"""Scale-out as a Deployment: the checks, the estimate, the steps, then runs submitted to the
queue, watched, collected into the outputs dir, cancelled; status and teardown like the other
options. There is no interactive worker: `connect` is refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sdtui import bucket_layout, sharding
from sdtui.deploy.aws import pricing
from sdtui.deploy.aws.session import pricing_client
from sdtui.deploy.base import (
    Deployment,
    DeploymentStatus,
    OnEvent,
    Resource,
    Step,
    StepFinished,
    StepLog,
    StepStarted,
    TeardownReport,
    run_steps,
)
from sdtui.deploy.batch import estimate, jobdef, models, runs
from sdtui.deploy.batch import teardown as batch_teardown
from sdtui.deploy.batch.settings import BatchSettings
from sdtui.deploy.batch.steps import BatchSteps, Preflight
from sdtui.errors import BadInput, SdtuiError
from sdtui.ledger import Ledger

POLL_S = 5.0


class BatchDeployment(Deployment):
    option = "batch"

    def __init__(self, settings: BatchSettings, *, purge_bucket: bool = False,
                 sleep: Callable[[float], None] = time.sleep,
                 warn: Callable[[str], None] = lambda line: None) -> None:
        self.settings = settings
        self.name = settings.name
        self.purge_bucket = purge_bucket
        self.ledger = Ledger.open(settings.name, "batch")
        self._sleep = sleep
        self.work = BatchSteps(settings, self.ledger, sleep=sleep, warn=warn)
        self._preflight: Preflight | None = None

    # --- before anything exists --------------------------------------------------------------

    def preflight(self) -> Preflight:
        """Every read-only check; BadInput on the first problem. Nothing is created."""
        if self._preflight is None:
            self._preflight = self.work.preflight()
        return self._preflight

    def fit_to(self, lines: list[dict[str, Any]]) -> str | None:
        """No more shards than lines (an empty shard would still boot an instance)."""
        if self.settings.gpus <= len(lines):
            return None
        self.settings.gpus = len(lines)
        return f"using {len(lines)} GPU(s): the run has {len(lines)} prompt(s)"

    def price(self) -> pricing.Price:
        s = self.settings
        return pricing.hourly_price(s.instance_type, str(s.region), spot=s.spot,
                                    pricing=pricing_client(self.work.session),
                                    ec2=self.work.client("ec2"))

    def rates(self, lines: list[dict[str, Any]]) -> estimate.Rates:
        first = lines[0]
        return estimate.rates(self.settings.instance_type, self.preflight().files.primary,
                              first["width"], first["height"], first["steps"],
                              self.preflight().files.total_bytes)

    def estimates(self, lines: list[dict[str, Any]]
                  ) -> tuple[estimate.Rates, list[estimate.Estimate]]:
        """W = 1, 2, 4, 8 and the chosen W, cheapest first in the table's order."""
        rates = self.rates(lines)
        return rates, self._table(lines, self.price().hourly_usd, rates)

    def estimates_without_account(self, lines: list[dict[str, Any]]
                                  ) -> tuple[estimate.Rates, list[estimate.Estimate], str]:
        """The same table before any AWS account is set up: the built-in on-demand price, and
        the model's size here (a key in the bucket cannot be looked up: a typical size is
        assumed). The line says so."""
        s, first = self.settings, lines[0]
        if all(models.is_local(m) for m in s.models):
            files = models.plan(None, s.bucket, False, list(s.models))
            primary, size, assumed = files.primary, files.total_bytes, ""
        else:
            primary, size = s.models[0].rstrip("/"), estimate.ASSUMED_MODEL_BYTES
            assumed = f", a {size / 1e9:.1f} GB model assumed (it is in the bucket)"
        price = pricing.hourly_price(s.instance_type, str(s.region), spot=False)
        rates = estimate.rates(s.instance_type, primary, first["width"], first["height"],
                               first["steps"], size)
        spot = " (spot is usually about a third of it)" if s.spot else ""
        note = (f"estimated without an AWS account: the {price.source}'s us-east-1 on-demand "
                f"price{spot}{assumed}")
        return rates, self._table(lines, price.hourly_usd, rates), note

    def _table(self, lines: list[dict[str, Any]], hourly_usd: float, rates: estimate.Rates
               ) -> list[estimate.Estimate]:
        choices = tuple(sorted({*estimate.SHARD_CHOICES, self.settings.gpus}))
        return estimate.table([line["count"] for line in lines], hourly_usd, rates, choices)

    # --- provisioning ------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        return self.work.steps(self.preflight())

    def provision(self, on_event: OnEvent, cancel: threading.Event | None = None) -> None:
        pre = self.preflight()
        s = self.settings
        self.ledger.set_params(account=pre.who.account, region=s.region, bucket=s.bucket,
                               profile=s.profile, models=list(s.models),
                               instance_type=s.instance_type, spot=s.spot,
                               fetched=[r.record() for r in s.bucket_sets()] or None)
        run_steps(self.work.steps(pre), on_event, cancel)

    def connect(self):  # noqa: ANN201
        raise BadInput("a scale-out deployment runs prompt files, not an interactive worker",
                       fix="pass --prompt-file FILE (and --gpus N)")

    # --- runs --------------------------------------------------------------------------------

    def submit(self, lines: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
        """Upload the run's requests and submit its job; returns the run's record."""
        s, pre = self.settings, self.preflight()
        run = bucket_layout.new_run_id()
        self.fit_to(lines)
        shards = s.gpus
        counts = [line["count"] for line in lines]
        rates = self.rates(lines)
        runs.keep_inputs(out_dir, lines)
        runs.upload_prompts(self.work.client("s3"), s.bucket, run, lines)
        attempt_s = estimate.attempt_timeout_s(
            max(sharding.images_per_shard(counts, shards)), rates)
        command = runs.child_command(bucket=s.bucket, region=str(s.region), run=run,
                                     shards=shards, files=pre.files)
        batch = self.work.client("batch")
        role_arn = self.work.run_access(run, pre.who.account)
        definition = jobdef.register_run(batch, jobdef.definition_params(
            s.name, image=self.ledger.params["image"], job_role_arn=role_arn, run=run))
        job_id = runs.submit(batch, s.name, run, definition=definition, shards=shards,
                             command=command, attempt_s=attempt_s,
                             environment=runs.child_environment())
        record = {"run": run, "job_id": job_id, "shards": shards, "counts": counts,
                  "bucket": s.bucket, "hourly_usd": self.price().hourly_usd,
                  "boot_s": rates.boot_s, "out_dir": str(out_dir),
                  "timing_key": estimate.timing_key(s.instance_type, pre.files.primary,
                                                    lines[0]["width"], lines[0]["height"],
                                                    lines[0]["steps"]),
                  "submitted": datetime.now(UTC).isoformat(timespec="seconds")}
        self.ledger.record("run", run, **record)
        return record

    def run_record(self, run: str | None) -> dict[str, Any]:
        """A run of this deployment by id (None: the latest one)."""
        ledger = Ledger.load(self.name)
        found = ledger.resources("run") if ledger else []
        if run is not None:
            found = [e for e in found if e.id == run]
        if not found:
            which = f"run {run!r}" if run else "a run"
            raise BadInput(f"deployment {self.name!r} has no {which}",
                           fix="see sdtui --no-ui --option batch --status for its runs")
        entry = found[-1]
        return {**entry.meta, "run": entry.id}

    def run_status(self, record: dict[str, Any]) -> runs.RunStatus:
        record = self.run_record(record["run"])  # another process may have cancelled it
        status = runs.run_status(self.work.client("batch"), self.work.client("s3"),
                                 record["bucket"], record, boot_s=float(record.get("boot_s", 0)))
        if status.finished:
            self.work.end_run_access(record["run"])
        return status

    def collect(self, record: dict[str, Any], out_dir: Path | None = None
                ) -> list[runs.Collected]:
        return runs.collect(self.work.client("s3"), record["bucket"], self.name, record["run"],
                            out_dir or Path(record["out_dir"]))

    def watch(self, record: dict[str, Any], on_image: Callable[[runs.Collected], None],
              on_status: Callable[[runs.RunStatus], None],
              stop: threading.Event | None = None, out_dir: Path | None = None
              ) -> runs.RunStatus:
        """Poll until the run ends (or `stop` is set), collecting each image as it lands."""
        stop = stop or threading.Event()
        collected: list[runs.Collected] = []
        while True:
            status = self.run_status(record)
            for image in self.collect(record, out_dir):
                collected.append(image)
                on_image(image)
            on_status(status)
            if status.finished or stop.is_set():
                break
            stop.wait(POLL_S)
        if status.finished:
            self._record_timings(record, collected)
        return status

    def _record_timings(self, record: dict[str, Any], images: list[runs.Collected]) -> None:
        seconds = [float(i.record["seconds"]) for i in images if i.record.get("seconds")]
        loads = {i.record.get("shard"): float(i.record["load_seconds"]) for i in images
                 if i.record.get("load_seconds") is not None}
        estimate.record_timings(record["timing_key"], seconds, list(loads.values()))

    def cancel(self, record: dict[str, Any]) -> list[str]:
        told = runs.cancel(self.work.client("batch"), record["job_id"], int(record["shards"]),
                           reason="cancelled with sdtui --cancel")
        self.ledger.record("run", record["run"], cancelled=True)
        return told

    # --- status and teardown -----------------------------------------------------------------

    def status(self) -> DeploymentStatus:
        ledger = Ledger.load(self.name)
        if ledger is None:
            return DeploymentStatus(self.name, "batch", "absent")
        resources = []
        for entry in ledger.resources():
            if entry.kind in {"object", "run"}:
                continue
            note = {"compute_environment": "costs nothing while idle; teardown is optional",
                    "bucket": "model files and runs/; kept on teardown unless --purge-bucket"
                    }.get(entry.kind, "")
            resources.append(Resource(entry.kind, entry.id, "recorded",
                                      kept_on_teardown=entry.kind == "bucket", note=note))
        status = DeploymentStatus(self.name, "batch", "ready" if ledger.get("job_definition")
                                  else "provisioning", resources)
        cost = 0.0
        for entry in ledger.resources("run"):
            record = {**entry.meta, "run": entry.id}
            try:
                run = self.run_status(record)
            except (ClientError, BotoCoreError, SdtuiError) as exc:
                resources.append(Resource("run", entry.id, f"unknown ({exc})"))
                continue
            cost += run.cost_so_far_usd
            resources.append(Resource("run", entry.id, run.state,
                                      note=f"{run.done}/{run.total} images, "
                                      f"{len(run.shards)} shard(s), ≈${run.cost_so_far_usd:.2f}"))
        status.cost_so_far_usd = cost if ledger.resources("run") else None
        return status

    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport:
        on_event(StepStarted("teardown", f"Tear down {self.name}"))
        started = time.monotonic()
        report = batch_teardown.teardown(
            self.work.session, self.name, Ledger.load(self.name),
            purge_bucket=purge or self.purge_bucket,
            log=lambda line: on_event(StepLog("teardown", line)), sleep=self._sleep)
        outcome = "failed" if report.left else "done"
        on_event(StepFinished("teardown", outcome, report.summary(), time.monotonic() - started))
        return report
