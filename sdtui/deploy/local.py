"""Option B: the worker on this machine's Docker engine, the model files in a Docker volume.

Steps: engine → volume → image → models → container → attach. Each is skipped when its work is
already done, and each thing created is recorded in the ledger first, so a crash or Ctrl-C
leaves `status` and `teardown` true.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
from docker.types import Mount

from sdtui.container.docker_engine import connect_engine, has_nvidia_runtime
from sdtui.deploy import model_copy, worker_container
from sdtui.deploy.base import (
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
from sdtui.deploy.local_settings import (  # noqa: F401  (re-exported)
    DEFAULT_BASE_IMAGE,
    DEFAULT_NAME,
    DEFAULT_VOLUME,
    LocalSettings,
)
from sdtui.deploy.worker_steps import WorkerSteps
from sdtui.ledger import Ledger
from sdtui.paths import state_dir


class LocalDeployment(WorkerSteps, Deployment):
    option = "local"
    dockerfile = "Dockerfile.local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.ledger = Ledger.open(settings.name, "local")
        self.base_image = settings.base_image
        self._client: docker.DockerClient | None = None

    # --- helpers -----------------------------------------------------------------------------

    @property
    def engine(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect_engine(self.settings.docker_host)
        return self._client

    @property
    def labels(self) -> dict[str, str]:
        return {worker_container.LABEL: self.name}

    def worker_outputs_dir(self) -> Path:
        """Where the worker keeps its own copy of every image, on this machine."""
        path = state_dir() / "worker-outputs" / self.name
        path.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:  # the worker runs as uid 1000 and must be able to write here
            os.chown(path, model_copy.WORKER_UID, model_copy.WORKER_UID)
        return path

    def _user(self) -> str | None:
        """Run as the caller on Linux so the worker's copies belong to them (never as root)."""
        return None if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"

    # --- steps -------------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        self.settings.validate()
        return [
            Step("engine", "Check the Docker engine", self._check_engine),
            Step("volume", f"Create volume {self.settings.volume}", self._create_volume,
                 self._volume_exists),
            self.image_step(),
            Step("models", "Copy the model files into the volume", self._copy_models,
                 self._models_in_volume),
            *self.container_steps(),
        ]

    def _check_engine(self, ctx: StepContext) -> str:
        version = self.engine.version().get("Version", "?")
        self.ledger.set_params(
            models=[str(Path(m).expanduser().absolute()) for m in self.settings.models],
            volume=self.settings.volume, base_image=self.settings.base_image,
            docker_host=self.settings.docker_host,
        )
        gpu = "NVIDIA runtime found" if has_nvidia_runtime(self.engine) else "no GPU runtime (CPU)"
        return f"Docker {version}, {gpu}"

    def _volume_exists(self) -> str | None:
        try:
            self.engine.volumes.get(self.settings.volume)
        except docker.errors.NotFound:
            return None
        self.ledger.record("volume", self.settings.volume)
        return "exists"

    def _create_volume(self, ctx: StepContext) -> str:
        self.ledger.record("volume", self.settings.volume)
        self.engine.volumes.create(self.settings.volume, labels=self.labels)
        return "created"

    def _models_in_volume(self) -> str | None:
        cache = self.ledger.params.get("hash_cache", {})
        self._files = model_copy.describe(self.settings.files(), cache)
        self.ledger.set_params(hash_cache=cache)
        with model_copy.VolumeCopier(self.engine, self.settings.volume, self._image,
                                     self.labels) as copier:
            self._manifest = copier.manifest()
        self._todo = model_copy.changed(self._files, self._manifest)
        return None if self._todo else f"{len(self._files)} file(s) unchanged in the volume"

    def _copy_models(self, ctx: StepContext) -> str:
        total, sent = model_copy.total_size(self._todo), 0

        def on_bytes(n: int) -> None:
            nonlocal sent
            sent += n
            ctx.progress(sent, total, "bytes")

        for f in self._todo:
            ctx.log(f"copying {f.name} ({f.size / 2**20:.1f} MiB)")
        with model_copy.VolumeCopier(self.engine, self.settings.volume, self._image,
                                     self.labels) as copier:
            copier.copy(self._todo, self._manifest, on_bytes)
        return f"copied {len(self._todo)} of {len(self._files)} file(s), {total / 2**20:.1f} MiB"

    def worker_spec(self) -> worker_container.WorkerSpec:
        return worker_container.WorkerSpec(
            deployment=self.name,
            image=self._image or "",
            model=worker_container.model_in_container(self.settings.models),
            model_sha256=worker_container.model_sha256(
                self.settings.models, {f.name: f.sha256 for f in getattr(self, "_files", [])}),
            data_mount=Mount(worker_container.DATA_DIR, self.settings.volume, type="volume",
                             read_only=True),
            outputs_host_dir=str(self.worker_outputs_dir()),
            gpu=has_nvidia_runtime(self.engine),
            user=self._user(),
        )

    # --- the interface -----------------------------------------------------------------------

    def status(self) -> DeploymentStatus:
        resources: list[Resource] = []
        state = "absent"
        try:
            engine = self.engine
        except Exception as exc:
            return DeploymentStatus(self.name, "local", f"unknown ({exc})")
        container = worker_container.find_worker(engine, self.name)
        if container is not None:
            state = "ready" if container.status == "running" else container.status
            resources.append(Resource("container", container.name, container.status))
        try:
            engine.volumes.get(self.settings.volume)
            resources.append(Resource("volume", self.settings.volume, "present",
                                      kept_on_teardown=True))
        except docker.errors.NotFound:
            pass
        if state == "absent" and resources:
            state = "stopped"
        return DeploymentStatus(self.name, "local", state, resources)

    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport:
        report = TeardownReport()
        on_event(StepStarted("teardown", f"Tear down {self.name}"))
        for container in self.engine.containers.list(
            all=True, filters={"label": f"{worker_container.LABEL}={self.name}"}
        ):
            container.remove(force=True)
            report.removed.append(Resource("container", container.name))
            self.ledger.forget("container", container.name)
        volume = Resource("volume", self.settings.volume, kept_on_teardown=not purge)
        try:
            vol = self.engine.volumes.get(self.settings.volume)
            if purge:
                vol.remove(force=True)
                report.removed.append(volume)
                self.ledger.forget("volume", self.settings.volume)
            else:
                report.kept.append(volume)
        except docker.errors.NotFound:
            self.ledger.forget("volume", self.settings.volume)
        if purge or not self.ledger.resources("volume"):
            self.ledger.delete()
        on_event(StepFinished("teardown", "done", report.summary()))
        return report

