"""The steps both options end with: build the worker image, start the worker container, attach.
Only where the engine is (local socket or ssh://) and what is mounted at /data differ."""

from __future__ import annotations

from abc import abstractmethod

import docker
from docker.models.containers import Container

from sdtui.client import WorkerClient
from sdtui.container.build import base_image_source, build_image, existing_image
from sdtui.container.docker_engine import engine_lost
from sdtui.deploy import worker_container
from sdtui.deploy.base import Step, StepContext
from sdtui.errors import BadInput, SdtuiError
from sdtui.ledger import Ledger


class WorkerSteps:
    name: str
    ledger: Ledger
    dockerfile: str
    base_image: str
    _image: str | None = None
    _worker: WorkerClient | None = None

    @property
    @abstractmethod
    def engine(self) -> docker.DockerClient: ...

    @abstractmethod
    def worker_spec(self) -> worker_container.WorkerSpec: ...

    def explain(self, exc: Exception) -> SdtuiError | None:
        return engine_lost(exc)

    def image_step(self, title: str = "Build the worker image") -> Step:
        return Step("image", title, self._build_image, self._image_exists)

    def container_steps(self) -> list[Step]:
        return [
            Step("container", "Start the worker container", self._create_container,
                 self._container_current),
            Step("attach", "Load the model and attach", self._attach),
        ]

    def base_image_unsure(self) -> str | None:
        """Before anything is created: a worker image still to be built needs its base image
        here or pullable (BuildFailed otherwise, with the fix); why it might not be, when the
        registry would not say (a private image); None when the build will find it."""
        if existing_image(self.engine, dockerfile=self.dockerfile,
                          base_image=self.base_image) is not None:
            return None
        sure, detail = base_image_source(self.engine, self.base_image)
        return None if sure else detail

    def _image_exists(self) -> str | None:
        return self._image_found(existing_image(self.engine, dockerfile=self.dockerfile,
                                                base_image=self.base_image), "is up to date")

    def _image_found(self, tag: str | None, state: str) -> str | None:
        """The image step's already-done answer, with the image recorded when there is one."""
        self._image = tag
        if tag is None:
            return None
        self.ledger.record("image", tag)
        return f"{tag} {state}"

    def _build_image(self, ctx: StepContext) -> str:
        self._image = build_image(self.engine, dockerfile=self.dockerfile,
                                  base_image=self.base_image, on_log=ctx.log)
        self.ledger.record("image", self._image)
        return self._image

    def _worker_container(self) -> Container | None:
        """The worker container this deployment's ledger records creating: only that one is
        ever attached to, replaced or removed."""
        recorded = {e.id for e in self.ledger.resources("container")}
        return worker_container.find_worker(self.engine, self.name, recorded)

    def _container_current(self) -> str | None:
        container = self._worker_container()
        if container is None or not worker_container.is_current(container, self.worker_spec()):
            return None
        self.ledger.record("container", container.name, container_id=container.id)
        return f"{container.name} ({container.status})"

    def _create_container(self, ctx: StepContext) -> str:
        if (old := self._worker_container()) is not None:
            ctx.log(f"replacing {old.name}: the image or the model changed")
            old.remove(force=True)
        name = worker_container.container_name(self.name)
        if _exists(self.engine, name):  # ours was just removed: this one is someone else's
            raise worker_container.not_ours([f"container {name}"], self.name)
        spec = self.worker_spec()
        self.ledger.record("container", name)  # first
        container = worker_container.create_worker(self.engine, spec)
        self.ledger.record("container", container.name, container_id=container.id)
        gib = worker_container.memory_limit_bytes(container) / 2**30
        return f"{container.name}, memory limit {gib:.1f} GiB"

    def _attach(self, ctx: StepContext) -> str:
        container = self._worker_container()
        was_running = container.status == "running"
        self._worker = worker_container.attach(container)
        ready = self._worker.ready or {}
        how = "reattached, model already loaded" if was_running else (
            f"model loaded in {ready.get('load_seconds', 0):.1f} s")
        # What the worker noticed while loading (e.g. tensors no component uses) is said here.
        notes = "".join(f"; {warning}" for warning in ready.get("warnings") or [])
        return f"{how}: {ready.get('family')} on {ready.get('device')}/{ready.get('dtype')}{notes}"

    def connect(self) -> WorkerClient:
        if self._worker is not None and not self._worker.closed:
            return self._worker
        container = self._worker_container()
        if container is None:
            raise BadInput(f"deployment {self.name!r} has no worker container",
                           fix="run sdtui again to provision it")
        self._worker = worker_container.attach(container)
        return self._worker


def _exists(engine: docker.DockerClient, container: str) -> bool:
    try:
        engine.containers.get(container)
    except docker.errors.NotFound:
        return False
    return True
