"""The long-lived worker container, the same for both options: found by label, created once,
attached through the SDK's attach socket, and diagnosed when it dies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount

from sdtui.client import WorkerClient
from sdtui.container.docker_engine import engine_lost
from sdtui.errors import BadInput, DeploymentError, WorkerDied

log = logging.getLogger(__name__)

LABEL = "sdtui.deployment"
ROLE_LABEL = "sdtui.role"
DATA_DIR = "/data"
OUTPUTS_DIR = "/outputs"
READY_TIMEOUT_S = 900
MODEL_LABEL = "sdtui.model"
MODEL_SHA_LABEL = "sdtui.model_sha256"
MODEL_SOURCE_LABEL = "sdtui.model_source"


@dataclass
class WorkerSpec:
    deployment: str
    image: str
    model: str  # path inside the container, under /data
    data_mount: Mount  # read-only at /data: a volume (local) or a bind of the s3fs mount (aws)
    outputs_host_dir: str | None = None
    gpu: bool = False
    user: str | None = None
    mem_limit: str | None = None  # e.g. "8g"; None leaves the engine's whole memory
    # The model file's sha256 (a single-file checkpoint's; None for a diffusers folder).
    model_sha256: str | None = None
    # A fetched model's pinned source (sdtui.fetch's Resolved.pinned), recorded in each image.
    model_source: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.deployment, ROLE_LABEL: "worker", MODEL_LABEL: self.model,
                "sdtui.image": self.image, MODEL_SHA_LABEL: self.model_sha256 or "",
                MODEL_SOURCE_LABEL: self.model_source or "",
                **self.extra_labels}


def model_in_container(models: list) -> str:
    """Where the primary model appears under /data: both options keep modelfiles' layout."""
    from sdtui.modelfiles import model_files

    return f"{DATA_DIR}/{model_files(models[0])[0][1].split('/')[0]}"


def container_name(deployment: str) -> str:
    return f"sdtui-{deployment}-worker"


def model_sha256(models: list, digests: dict[str, str]) -> str | None:
    """The primary model file's sha256 from `digests` (name under /data -> sha256, what the
    models step computed), or None for a diffusers folder, which has no single model file."""
    from sdtui.modelfiles import hashed_name

    name = hashed_name(models[0])
    return digests.get(name) if name else None


def find_worker(client: docker.DockerClient, deployment: str, recorded: set[str]
                ) -> Container | None:
    """The deployment's worker container among those the ledger records creating (`recorded`,
    by name): anyone can put the labels on a container, so a labelled one is not ours alone."""
    found = client.containers.list(
        all=True, filters={"label": [f"{LABEL}={deployment}", f"{ROLE_LABEL}=worker"]}
    )
    return next((c for c in found if c.name in recorded), None)


def not_ours(objects: list[str], deployment: str) -> BadInput:
    """The refusal to touch what claims a deployment (its label, its worker's name) without its
    ledger's record of creating it: another state dir's deployment of that name, or made by
    hand."""
    return BadInput(
        f"{', '.join(objects)} on this Docker engine claim{'s' if len(objects) == 1 else ''} "
        f"deployment {deployment}, but this state dir's ledger does not record sdtui creating "
        f"{'it' if len(objects) == 1 else 'them'} (another state dir's deployment of that name, "
        "or made by hand): sdtui never uses, replaces or deletes them",
        fix="choose another --name, or use the state dir that created that deployment "
        "(SDTUI_STATE_DIR)")


def is_current(container: Container, spec: WorkerSpec) -> bool:
    """A container made from another image or for another model must be replaced."""
    labels = container.labels
    return (labels.get("sdtui.image") == spec.image and labels.get(MODEL_LABEL) == spec.model
            and labels.get(MODEL_SHA_LABEL, "") == (spec.model_sha256 or "")
            and labels.get(MODEL_SOURCE_LABEL, "") == (spec.model_source or ""))


def create_worker(client: docker.DockerClient, spec: WorkerSpec) -> Container:
    command = ["--model", spec.model]
    if spec.model_sha256:
        command += ["--model-sha256", spec.model_sha256]
    if spec.model_source:
        command += ["--model-source", spec.model_source]
    mounts = [spec.data_mount]
    if spec.outputs_host_dir:
        command += ["--outputs", OUTPUTS_DIR]
        mounts.append(Mount(OUTPUTS_DIR, spec.outputs_host_dir, type="bind"))
    api = client.api
    host_config = api.create_host_config(
        mounts=mounts,
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if spec.gpu else None,
        # Events carry base64 PNGs: keep the log bounded, but keep it for diagnosis.
        log_config=LogConfig(type="json-file", config={"max-size": "20m", "max-file": "2"}),
        restart_policy={"Name": "no"},
        mem_limit=spec.mem_limit,
        # PID 1 ignores a signal it has no handler for: before Python has set the worker's
        # SIGTERM handler, `docker stop` would wait out its grace and SIGKILL it. Docker's init
        # passes SIGTERM on to the worker, which then stops at once (exit 143).
        init=True,
    )
    config = api.create_container_config(
        spec.image, command, stdin_open=True, tty=False, user=spec.user, labels=spec.labels,
        host_config=host_config,
    )
    # The SDK sets StdinOnce with stdin_open, and then the worker's stdin closes when the first
    # client detaches (or dies). The worker must outlive its clients.
    config["StdinOnce"] = False
    created = api.create_container_from_config(config, name=container_name(spec.deployment))
    return client.containers.get(created["Id"])


def attach(container: Container, on_log: Callable[[dict[str, Any]], None] | None = None
           ) -> WorkerClient:
    """Attach to the worker (starting it if needed). A fresh worker announces itself with
    `ready`; one that was already running is asked with `info`, and never reloads."""
    container.reload()
    if container.status == "paused":  # the engine refuses to attach (409) until unpaused
        raise DeploymentError(f"the worker container {container.name} is paused (`docker pause`)",
                              fix=f"run `docker unpause {container.name}`, then the same command")
    api = container.client.api
    sock = api.attach_socket(
        container.id, params={"stdin": 1, "stdout": 1, "stderr": 0, "stream": 1}
    )
    api._disable_socket_timeout(sock)
    client = WorkerClient.over_attach_socket(sock, diagnose=lambda: diagnose(container),
                                             on_log=on_log)
    container.reload()
    if container.status != "running":
        container.start()
        client.wait_ready(timeout=READY_TIMEOUT_S)
    else:
        client.info()
    return client


def memory_limit_bytes(container: Container) -> int:
    """The container's own limit, else the engine's total memory (what it can really use)."""
    limit = container.attrs.get("HostConfig", {}).get("Memory") or 0
    return limit or int(container.client.info().get("MemTotal", 0))


def diagnose(container: Container) -> WorkerDied:
    """Why the worker's stream ended, in one line."""
    try:
        return _diagnose(container)
    except docker.errors.NotFound:
        return _torn_down()
    except Exception as exc:  # noqa: BLE001 (the engine, or SSH to it, is gone: say so)
        if (lost := engine_lost(exc)) is None:
            raise
        return WorkerDied(lost.message, fix=lost.fix)


def _torn_down() -> WorkerDied:
    return WorkerDied("the deployment was torn down: its worker container was removed (another "
                      "client's `sdtui --teardown`, or `docker rm`)",
                      fix="the images saved so far are kept; deploy it again to go on (sdtui "
                      "--no-ui with the same flags)")


RESTART_FIX = "run sdtui again: it restarts the worker, and finished images are kept"


def _diagnose(container: Container) -> WorkerDied:
    again = RESTART_FIX
    container.reload()
    state = container.attrs.get("State", {})
    # A teardown (another client's `--teardown`, or `docker rm -f`) marks the container as being
    # removed before it kills the worker: say that, not "killed".
    if state.get("Status") in ("removing", "dead"):
        return _torn_down()
    if state.get("Running"):
        return WorkerDied("the connection to the worker dropped; the worker is still running",
                          fix="run sdtui again to reattach; finished images are kept")
    limited = bool(container.attrs.get("HostConfig", {}).get("Memory"))
    # Some engines (cgroup v2) do not set OOMKilled: a SIGKILL under a memory limit is one.
    if state.get("OOMKilled") or (limited and state.get("ExitCode") == 137):
        gib = memory_limit_bytes(container) / 2**30
        return WorkerDied(
            f"the worker was OOM-killed (memory limit {gib:.1f} GiB)",
            fix="use a smaller size or count, or give Docker more memory",
        )
    if state.get("ExitCode") == 143:  # SIGTERM: the worker leaves at once, its spool kept
        return WorkerDied("the worker was stopped (`docker stop`, or the Docker engine "
                          "stopped or restarted)", fix=again)
    if state.get("ExitCode") == 137:
        gib = memory_limit_bytes(container) / 2**30
        return WorkerDied(
            "the worker was killed (SIGKILL: `docker kill`, the engine stopping, or out of "
            f"memory; limit {gib:.1f} GiB)", fix=again)
    tail = container.logs(stdout=False, stderr=True, tail=5).decode(errors="replace").strip()
    last = tail.splitlines()[-1] if tail else "no output"
    return WorkerDied(
        f"the worker exited with code {state.get('ExitCode')}: {last}",
        fix="see `docker logs " + container.name + "`",
    )
