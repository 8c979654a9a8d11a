"""A deployment that runs no Docker and no AWS (what cannot exist here: a GPU instance boot),
emitting the real event types; its worker is a real worker process."""

from __future__ import annotations

import threading
import time
from typing import Literal

from sdtui.client import WorkerClient
from sdtui.deploy.base import (
    CostUpdate,
    Deployment,
    DeploymentStatus,
    OnEvent,
    Resource,
    Step,
    StepContext,
    StepFinished,
    StepStarted,
    TeardownReport,
)
from sdtui.errors import DeploymentError
from sdtui.ledger import Ledger

from .worker_relay import SubprocessWorker

UPLOAD_BYTES = 64 * 2**20


class FakeDeployment(Deployment):
    def __init__(self, worker: SubprocessWorker | None, name: str = "fake",
                 option: Literal["local", "aws"] = "local", *, fail_once: bool = False,
                 hold: threading.Event | None = None, settings: object = None,
                 failure: DeploymentError | None = None) -> None:
        self.worker = worker
        self.name = name
        self.option = option
        self.fail_once = fail_once
        self.failure = failure  # raised by the image step, every time
        if settings is not None:
            self.settings = settings  # what the form asked for (the core remembers it)
        self.hold = hold  # while set... cleared: the upload waits for it (cancel tests)
        self.provisioned = 0
        self.teardowns: list[bool] = []
        self.ledger = Ledger.open(name, option)

    def plan(self) -> list[Step]:
        return [
            Step("engine", "Check the engine", lambda ctx: "engine 27.0, no GPU runtime"),
            Step("volume", "Create the volume", lambda ctx: "created", lambda: None),
            Step("image", "Build the worker image", self._image,
                 lambda: None if self.failure else "up to date"),
            Step("models", "Upload the model files", self._upload),
            Step("container", "Start the worker", self._start),
        ]

    def _upload(self, ctx: StepContext) -> str:
        ctx.log("uploading model.safetensors (64.0 MiB)")
        for done in range(0, UPLOAD_BYTES + 1, UPLOAD_BYTES // 64):
            ctx.progress(done, UPLOAD_BYTES, "bytes")
            if self.hold is not None:
                while not self.hold.wait(0.05):
                    ctx.check_cancel()
            ctx.check_cancel()
        if self.fail_once:
            self.fail_once = False
            raise DeploymentError("the upload was refused: disk quota exceeded",
                                  fix="free some space, then retry")
        return "copied 1 file, 64.0 MiB"

    def _image(self, ctx: StepContext) -> str:
        if self.failure is not None:
            raise self.failure
        return ""

    def _start(self, ctx: StepContext) -> str:
        self.ledger.set_params(models=["/models/tiny"])
        self.ledger.record("container", f"sdtui-{self.name}")
        self.ledger.record("volume", "sdtui-models")
        if self.option == "aws":
            ctx._on_event(CostUpdate(0.526, 0.03, 29 * 60))
        self.provisioned += 1
        time.sleep(0.05)
        return "running"

    def connect(self) -> WorkerClient:
        assert self.worker is not None, "this fake has no worker"
        return self.worker.attach()

    def status(self) -> DeploymentStatus:
        return DeploymentStatus(self.name, self.option, "ready", [
            Resource("container", f"sdtui-{self.name}", "running"),
            Resource("volume", "sdtui-models", "present", kept_on_teardown=True),
        ], hourly_usd=0.526 if self.option == "aws" else None)

    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport:
        self.teardowns.append(purge)
        on_event(StepStarted("teardown", f"Tear down {self.name}"))
        report = TeardownReport(removed=[Resource("container", f"sdtui-{self.name}")])
        volume = Resource("volume", "sdtui-models", kept_on_teardown=not purge)
        (report.removed if purge else report.kept).append(volume)
        self.ledger.delete()
        on_event(StepFinished("teardown", "done", "removed container"))
        return report


class FakeAwsDeployment(FakeDeployment):
    """Option A's steps, upload progress, cost and teardown, with no instance behind them."""

    def __init__(self, worker: SubprocessWorker | None, name: str = "cloud", **kw: object
                 ) -> None:
        super().__init__(worker, name, "aws", **kw)  # type: ignore[arg-type]
        self.polls = 0

    def plan(self) -> list[Step]:
        titles = {"identity": "Check the AWS identity", "ami": "Find the Deep Learning AMI",
                  "bucket": "Create the private bucket", "iam": "Create the instance role",
                  "access": "Create the key pair and security group",
                  "instance": "Launch the GPU instance", "bootstrap": "Bootstrap the host",
                  "image": "Build the worker image", "container": "Start the worker",
                  "attach": "Attach to the worker"}
        steps = [Step(name, title, lambda ctx: "ok") for name, title in titles.items()]
        steps.insert(3, Step("upload", "Upload the model files", self._upload))
        steps[7] = Step("instance", titles["instance"], self._launch)
        steps[-2] = Step("container", titles["container"], self._start)
        return steps

    def _launch(self, ctx: StepContext) -> str:
        ctx._on_event(CostUpdate(0.526, 0.0, 30 * 60))
        return "i-0fake (g4dn.xlarge, on-demand)"

    def cost_update(self) -> CostUpdate | None:
        self.polls += 1
        return CostUpdate(0.526, 0.50, 12 * 60)

    def status(self) -> DeploymentStatus:
        return DeploymentStatus(self.name, "aws", "ready", [
            Resource("instance", "i-0fake", "running, 203.0.113.7", note="g4dn.xlarge"),
            Resource("security_group", "sg-0fake"), Resource("key_pair", f"sdtui-{self.name}"),
            Resource("role", f"sdtui-{self.name}"),
            Resource("instance_profile", f"sdtui-{self.name}"),
            Resource("bucket", "my-sd-models", kept_on_teardown=True,
                     note="model files; kept on teardown unless --purge-bucket"),
        ], hourly_usd=0.526, cost_so_far_usd=0.5)

    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport:
        self.teardowns.append(purge)
        on_event(StepStarted("teardown", f"Tear down {self.name}"))
        status = self.status()
        report = TeardownReport(removed=[r for r in status.resources
                                         if purge or not r.kept_on_teardown],
                                kept=[r for r in status.resources
                                      if not purge and r.kept_on_teardown])
        self.ledger.delete()
        on_event(StepFinished("teardown", "done", "removed the instance and its access"))
        return report


class IdleWorker:
    """Only what the prompt panel asks of a worker before the first generation."""

    closed = False

    def fetch(self) -> list:
        return []

    def watch_running(self) -> None:  # nothing left running by a client that quit
        return None

    def info(self, timeout: float = 30) -> dict:  # idle, as the real worker answers
        return {"type": "info", "busy": None, "request": None, "queued": 0, "unacked": 0,
                "uptime": 1.0, "ready": {}}

    def close(self) -> None:
        self.closed = True


class FakeBatchDeployment(FakeDeployment):
    """A scale-out with no AWS behind it: quick steps, then a run whose "shards" save real PNGs
    (through the outputs writer) one line at a time; `gate`, when given, lets one image through
    per release (cancel tests)."""

    def __init__(self, name: str = "batch", gate: threading.Semaphore | None = None) -> None:
        super().__init__(None, name, "batch")  # type: ignore[arg-type]
        self.gate = gate
        self.submitted: list[list[dict]] = []
        self.cancelled = threading.Event()
        self.record: dict | None = None

    def plan(self) -> list[Step]:
        return [Step(n, t, lambda ctx: "ok") for n, t in (
            ("bucket", "Private S3 bucket for the model"), ("image", "Worker image in ECR"),
            ("iam", "Job role and instance role"), ("compute", "Compute environment"),
            ("queue", "Job queue"), ("jobdef", "Job definition"))]

    def connect(self) -> WorkerClient:
        raise AssertionError("a scale-out never attaches to a worker")

    def submit(self, lines: list[dict], out_dir) -> dict:  # noqa: ANN001
        self.submitted.append(lines)
        self.record = {"run": "20250601-120000-abcd", "job_id": "job-1", "shards": 2,
                       "counts": [line["count"] for line in lines], "out_dir": str(out_dir)}
        return self.record

    def run_record(self, run: str | None) -> dict:
        assert self.record is not None
        return self.record

    def watch(self, record, on_image, on_status, stop=None, out_dir=None):  # noqa: ANN001, ANN201
        import io

        from PIL import Image

        from sdtui.deploy.batch.runs import Collected, RunStatus, ShardStatus
        from sdtui.outputs import save_image

        lines = self.submitted[-1]
        done = 0

        def status(state: str) -> RunStatus:
            shards = [ShardStatus(i, f"job-1:{i}", {"running": "RUNNING", "cancelled": "FAILED"}
                                  .get(state, "SUCCEEDED"),
                                  sum(1 for n in range(i, done, 2)), len(range(i, len(lines), 2)),
                                  attempts=1) for i in range(2)]
            return RunStatus(record["run"], "job-1", state, done, len(lines), shards, 0.01 * done)

        for number, line in enumerate(lines):
            if self.gate is not None:
                while not self.gate.acquire(timeout=0.05):
                    if self.cancelled.is_set() or (stop is not None and stop.is_set()):
                        final = status("cancelled")
                        on_status(final)
                        return final
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (number * 40 % 256, 90, 160)).save(buffer, "PNG")
            params = {**line, "seed": line["seed"], "index": 0}
            path = save_image(out_dir or record["out_dir"], buffer.getvalue(), params)
            done += 1
            on_image(Collected(path, number, 0, {"params": params, "shard": number % 2}))
            on_status(status("running"))
        final = status("succeeded")
        on_status(final)
        return final

    def cancel(self, record: dict) -> list[str]:
        self.cancelled.set()
        return ["job-1:0", "job-1:1"]
