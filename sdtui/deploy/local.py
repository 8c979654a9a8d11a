"""Option B: the worker on this machine's Docker engine, the model files in a Docker volume.

Steps: engine → volume → image → models → container → attach. Each is skipped when its work is
already done, and each thing created is recorded in the ledger first, so a crash or Ctrl-C
leaves `status` and `teardown` true.

Ownership: `status` and `teardown` act only on what carries the deployment's label and is in
its ledger. A volume that existed before (the user's) may receive the model files, but it is
recorded as theirs: reported as "yours, kept" and never deleted; asking to purge it is refused
before anything is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from sdtui.deploy.kept_model import kept_note, model_gone
from sdtui.deploy.local_settings import (  # noqa: F401  (re-exported)
    DEFAULT_BASE_IMAGE,
    DEFAULT_NAME,
    DEFAULT_VOLUME,
    LocalSettings,
)
from sdtui.deploy.worker_steps import WorkerSteps
from sdtui.errors import BadInput
from sdtui.fetch import download
from sdtui.fetch.progress import Meter
from sdtui.ledger import Ledger
from sdtui.paths import state_dir
from sdtui.worker import spool


class LocalDeployment(WorkerSteps, Deployment):
    option = "local"
    dockerfile = "Dockerfile.local"

    def __init__(self, settings: LocalSettings) -> None:
        settings.fill_in()
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

    @property
    def spool_dir(self) -> Path:
        """The worker's own directory on this machine (its spool of unsaved images)."""
        return state_dir() / "worker-outputs" / self.name

    def worker_outputs_dir(self) -> Path:
        path = self.spool_dir
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
        sets = self.settings.to_fetch()
        title = (f"Fetch {', '.join(r.ref for r in sets)} "
                 f"({sum(r.total for r in sets) / 2**20:.1f} MiB)")
        return [
            Step("engine", "Check the Docker engine", self._check_engine),
            *([Step("fetch", title, self._fetch, self._fetched)] if sets else []),
            Step("volume", f"Create volume {self.settings.volume}", self._create_volume,
                 self._volume_exists),
            self.image_step(),
            Step("models", "Copy the model files into the volume", self._copy_models,
                 self._models_in_volume),
            *self.container_steps(),
        ]

    def _check_engine(self, ctx: StepContext) -> str:
        version = self.engine.version().get("Version", "?")
        # Before this state dir records anything (a fresh read: another run of it may be
        # copying the models with a helper container it has recorded).
        if claimed := self._not_ours(Ledger.load(self.name)):
            raise worker_container.not_ours([f"{r.kind} {r.id}" for r in claimed], self.name)
        if self.settings.model_kept():
            self._kept_model()  # refused here, before anything is created, when gone
        unsure = self.base_image_unsure()  # refused here, not after the volume is made
        fetched = self.settings.fetched_model() is not None
        self.ledger.set_params(
            models=[str(m) if i == 0 and fetched else str(Path(m).expanduser().absolute())
                    for i, m in enumerate(self.settings.models)],
            fetched=[r.record() for r in self.settings.to_fetch()] or None,
            volume=self.settings.volume, base_image=self.settings.base_image,
            docker_host=self.settings.docker_host, **{TORN_DOWN: False},
        )
        gpu = "NVIDIA runtime found" if has_nvidia_runtime(self.engine) else "no GPU runtime (CPU)"
        return f"Docker {version}, {gpu}" + (f"; {unsure}" if unsure else "")

    def _fetched(self) -> str | None:
        sets, store = self.settings.to_fetch(), self.settings.store
        if any(download.missing(store, r) for r in sets):
            return None
        return (f"{sum(len(r.files) for r in sets)} file(s) already fetched and verified "
                f"({'; '.join(r.source for r in sets)})")

    def _fetch(self, ctx: StepContext) -> str:
        sets, got = self.settings.to_fetch(), []
        for resolved in sets:
            got += download.fetch(self.settings.store, resolved, Meter(ctx.download),
                                  ctx.cancel)
        size = sum(f.size or 0 for f in got)
        return (f"fetched {len(got)} of {sum(len(r.files) for r in sets)} file(s), "
                f"{size / 2**20:.1f} MiB, checksums verified "
                f"({'; '.join(r.source for r in sets)})")

    def _labelled(self, labels: dict | None) -> bool:
        return (labels or {}).get(worker_container.LABEL) == self.name

    def _not_ours(self, ledger: Ledger | None) -> list[Resource]:
        """What on the engine claims this deployment (its label, or its worker container's
        name) that this state dir's ledger does not record creating."""
        containers = {e.id for e in ledger.resources("container")} if ledger else set()
        volumes = {e.id for e in ledger.resources("volume") if e.meta.get("created", True)
                   } if ledger else set()
        label = {"label": f"{worker_container.LABEL}={self.name}"}
        found = [c.name for c in self.engine.containers.list(all=True, filters=label)]
        with contextlib.suppress(docker.errors.NotFound):
            found.append(self.engine.containers.get(
                worker_container.container_name(self.name)).name)
        claimed = [Resource("container", name, note=NOT_OURS)
                   for name in dict.fromkeys(found) if name not in containers]
        return claimed + [Resource("volume", v.name, kept_on_teardown=True, note=NOT_OURS)
                          for v in self.engine.volumes.list(filters=label)
                          if v.name not in volumes]

    def _volume_exists(self) -> str | None:
        try:
            volume = self.engine.volumes.get(self.settings.volume)
        except docker.errors.NotFound:
            return None
        entry = next((e for e in self.ledger.resources("volume")
                      if e.id == self.settings.volume), None)
        if entry is None:  # it was there before this deployment: the user's
            self.ledger.record("volume", self.settings.volume, created=False)
        ours = (entry is not None and entry.meta.get("created", True)
                and self._labelled(volume.attrs.get("Labels")))
        return "exists" if ours else YOURS

    def _create_volume(self, ctx: StepContext) -> str:
        self.ledger.record("volume", self.settings.volume, created=True)
        volume = self.engine.volumes.create(self.settings.volume, labels=self.labels)
        if not self._labelled(volume.attrs.get("Labels")):  # made by someone else meanwhile
            self.ledger.record("volume", self.settings.volume, created=False)
            return YOURS
        return "created"

    @contextlib.contextmanager
    def _copier(self) -> Iterator[model_copy.VolumeCopier]:
        """The copy helper container, in the ledger for as long as it exists."""
        name = f"sdtui-{self.name}-copy-{uuid.uuid4().hex[:8]}"
        self.ledger.record("container", name, role="copy-helper")
        with model_copy.VolumeCopier(self.engine, self.settings.volume, self._image,
                                     self.labels, name=name) as copier:
            yield copier
        self.ledger.forget("container", name)

    def _models_in_volume(self) -> str | None:
        cache = self.ledger.params.get("hash_cache", {})
        self._files = model_copy.describe(self.settings.files(), cache)
        self.ledger.set_params(hash_cache=cache)
        with self._copier() as copier:
            self._manifest = copier.manifest()
        self._todo = model_copy.changed(self._files, self._manifest)
        kept = ""
        if self.settings.model_kept():
            model, sha256 = self._kept_model()
            name = model.removeprefix(f"{worker_container.DATA_DIR}/")
            held = (self._manifest.get(name, {}).get("sha256") == sha256 if sha256 else
                    any(f.startswith(f"{name}/") for f in self._manifest))
            if not held:
                raise self._model_gone("the volume no longer holds its copy")
            kept = f"; {kept_note(name, 'volume')}"
        return None if self._todo else (f"{len(self._files)} file(s) unchanged in the "
                                        f"volume{kept}")

    def _copy_models(self, ctx: StepContext) -> str:
        total, sent = model_copy.total_size(self._todo), 0

        def on_bytes(n: int) -> None:
            nonlocal sent
            sent += n
            ctx.progress(sent, total, "bytes")

        for f in self._todo:
            ctx.log(f"copying {f.name} ({f.size / 2**20:.1f} MiB)")
        with self._copier() as copier:
            copier.copy(self._todo, self._manifest, on_bytes)
        return f"copied {len(self._todo)} of {len(self._files)} file(s), {total / 2**20:.1f} MiB"

    def _model_gone(self, why: str) -> BadInput:
        return model_gone(self.settings.models[0], why)

    def _kept_model(self) -> tuple[str, str | None]:
        """(the model under /data, its sha256) as the worker container this deployment
        created was given them, for a model file gone from this machine."""
        container = self._worker_container()
        name = Path(self.settings.models[0]).name
        if container is None or container.labels.get(worker_container.MODEL_LABEL) != \
                f"{worker_container.DATA_DIR}/{name}":
            raise self._model_gone("the worker container that had it loaded is gone")
        return (container.labels[worker_container.MODEL_LABEL],
                container.labels.get(worker_container.MODEL_SHA_LABEL) or None)

    def _model_spec(self) -> tuple[str, str | None]:
        """(the model under /data, its sha256) for the worker container."""
        if self.settings.model_kept():
            return self._kept_model()
        models = self.settings.local_models()
        return (worker_container.model_in_container(models), worker_container.model_sha256(
            models, {f.name: f.sha256 for f in getattr(self, "_files", [])}))

    def worker_spec(self) -> worker_container.WorkerSpec:
        model, sha256 = self._model_spec()
        return worker_container.WorkerSpec(
            deployment=self.name,
            image=self._image or "",
            model=model,
            model_sha256=sha256,
            model_source=fetched.pinned if (fetched := self.settings.fetched_model()) else None,
            data_mount=Mount(worker_container.DATA_DIR, self.settings.volume, type="volume",
                             read_only=True),
            outputs_host_dir=str(self.worker_outputs_dir()),
            gpu=has_nvidia_runtime(self.engine),
            user=self._user(),
        )

    # --- the interface -----------------------------------------------------------------------

    def _volumes(self, ledger: Ledger | None) -> list[tuple[str, Any, bool]]:
        """(name, volume or None when gone, ours) for each volume the ledger records, and the
        named one (--volume) when it is not recorded. Ours: the ledger says sdtui created it
        (an entry without that note predates it) and it carries this deployment's label."""
        recorded = {e.id: e for e in ledger.resources("volume")} if ledger else {}
        names = list(recorded) + [v for v in [self.settings.volume] if v not in recorded]
        found = []
        for name in names:
            try:
                volume = self.engine.volumes.get(name)
            except docker.errors.NotFound:
                found.append((name, None, False))
                continue
            entry = recorded.get(name)
            ours = (entry is not None and entry.meta.get("created", True)
                    and self._labelled(volume.attrs.get("Labels")))
            found.append((name, volume, bool(ours)))
        return found

    def _spooled(self) -> int:
        """Images the worker finished that no client has saved yet."""
        return spool.count(self.spool_dir)

    def status(self) -> DeploymentStatus:
        ledger = Ledger.load(self.name)
        if ledger is None:  # nothing recorded: nothing of ours to report
            return DeploymentStatus(self.name, "local", "absent")
        resources: list[Resource] = []
        state = "absent"
        engine = self.engine  # unreachable: EngineUnreachable, the deployment failing (exit 3)
        recorded = {e.id for e in ledger.resources("container")}
        container = worker_container.find_worker(engine, self.name, recorded)
        if container is not None:
            state = "ready" if container.status == "running" else container.status
            resources.append(Resource("container", container.name, container.status))
        for name, volume, ours in self._volumes(ledger):
            if volume is None or name not in {e.id for e in ledger.resources("volume")}:
                continue
            resources.append(Resource("volume", name, "present", kept_on_teardown=True,
                                      note="" if ours else YOURS))
        if spooled := self._spooled():
            resources.append(Resource("spool", str(self.spool_dir), f"{spooled} unsaved image(s)",
                                      note="the next run saves them"))
        if state == "absent" and resources:
            state = self._without_worker(ledger, resources)
        return DeploymentStatus(self.name, "local", state, resources)

    @staticmethod
    def _without_worker(ledger: Ledger, resources: list[Resource]) -> str:
        """No worker, something left: a teardown that kept the volume (or unsaved images), or a
        worker that went without one (`docker rm`, a provisioning that stopped early)."""
        if not ledger.params.get(TORN_DOWN) or ledger.resources("container"):
            return "stopped"
        return ("torn down (volume kept)" if any(r.kind == "volume" for r in resources)
                else "torn down")

    def refuse_foreign_purge(self) -> None:
        for name, volume, ours in self._volumes(Ledger.load(self.name)):
            if volume is not None and not ours:
                raise BadInput(
                    f"volume {name} was not created by sdtui for deployment {self.name} (its "
                    f"ledger does not record creating it, or it lacks the "
                    f"{worker_container.LABEL}={self.name} label): it is yours, and sdtui "
                    "never deletes it",
                    fix="tear down without --purge-volume; delete it yourself if you must")

    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport:
        if purge:  # refused before anything is deleted
            self.refuse_foreign_purge()
        ledger = Ledger.load(self.name)
        volumes = self._volumes(ledger)
        report = TeardownReport()
        on_event(StepStarted("teardown", f"Tear down {self.name}"))
        if ledger is None:  # nothing is ours; say what claims the name and is left alone
            report.kept.extend(self._not_ours(None))
            on_event(StepFinished("teardown", "done", "nothing recorded for this deployment in "
                                  "this state dir; " + report.summary()))
            return report
        recorded = {e.id for e in ledger.resources("container")}
        for container in self.engine.containers.list(
            all=True, filters={"label": f"{worker_container.LABEL}={self.name}"}
        ):
            if container.name not in recorded:
                report.kept.append(Resource("container", container.name, note=NOT_OURS))
                continue
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                report.left.append(Resource("container", container.name, note=str(exc)))
                continue
            report.removed.append(Resource("container", container.name))
        for name in recorded - {r.id for r in report.left}:
            ledger.forget("container", name)
        for name, volume, ours in volumes:
            if volume is None:
                ledger.forget("volume", name)
            elif not ours:
                report.kept.append(Resource("volume", name, kept_on_teardown=True, note=YOURS))
                ledger.forget("volume", name)
            elif purge:
                try:
                    volume.remove(force=True)
                except docker.errors.DockerException as exc:  # e.g. in use by another container
                    report.left.append(Resource("volume", name, note=str(exc)))
                    continue
                report.removed.append(Resource("volume", name))
                ledger.forget("volume", name)
            else:
                report.kept.append(Resource("volume", name, kept_on_teardown=True,
                                            note="the model files; --purge-volume deletes it"))
        for entry in ledger.resources("image"):
            ledger.forget("image", entry.id)
            with contextlib.suppress(docker.errors.NotFound):
                self.engine.images.get(entry.id)
                report.kept.append(Resource("image", entry.id, kept_on_teardown=True, note=(
                    "the worker image, shared by every deployment on this engine "
                    "(`docker image rm` deletes it)")))
        self._teardown_spool(report)
        if not ledger.resources():
            ledger.delete()
        elif not ledger.resources("container"):
            ledger.set_params(**{TORN_DOWN: True})
        on_event(StepFinished("teardown", "done", report.summary()))
        return report

    def _teardown_spool(self, report: TeardownReport) -> None:
        """The worker's directory goes when it holds nothing unsaved; else it is kept for the
        next run with this name, which saves those images first."""
        if not self.spool_dir.exists():
            return
        if spooled := self._spooled():
            report.kept.append(Resource("spool", str(self.spool_dir), kept_on_teardown=True,
                                        note=f"{spooled} image(s) the worker finished that no "
                                        f"client saved; the next run of {self.name} saves them"))
            return
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        report.removed.append(Resource("spool", str(self.spool_dir), note="empty"))


# A ledger param: the last teardown removed the worker and kept something (the volume).
TORN_DOWN = "torn_down"
NOT_OURS = ("it carries this deployment's label or name, but this state dir's ledger does not "
            "record sdtui creating it (another state dir's deployment?): not deleted")
YOURS = "yours (not created by sdtui): it receives the model files, and is never deleted"
