"""Option A's "fetch" step, client side: the instance's engine (driven over SSH, like the worker)
runs `python -m sdtui.fetch.to_bucket` in the worker image, so a model named by reference goes
from the hub to the bucket without passing through this machine.

The job, tokens included, is written to the container's stdin over the attach socket: the
tokens are never in the container's configuration, its logs or the instance's disk. The
container uses the host's network because the instance's metadata service (the role's
credentials) is one hop away only (IMDSv2 hop limit 1, kept). Its staging folder is a host
folder, so a fetch cut short resumes on the next run."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable

import docker
from docker.types import LogConfig, Mount
from docker.utils.socket import STDERR, STDOUT, frames_iter

from sdtui.deploy.aws.bootstrap import test_credentials
from sdtui.deploy.worker_container import LABEL, ROLE_LABEL, not_ours
from sdtui.errors import DeploymentError, Interrupted
from sdtui.fetch import civitai, hf
from sdtui.fetch.plan import Resolved
from sdtui.ledger import Ledger

STAGING_DIR = "/var/lib/sdtui/fetch"  # on the instance
STAGING_IN_CONTAINER = "/staging"
WORKER_UID = 1000  # the image's user, who writes the staging folder
RUNNER = ["python3", "-m", "sdtui.fetch.to_bucket"]
# Where the hub, Civitai and S3 are, as this machine was told (mirrors, VPC endpoints, tests).
FORWARDED = ("HF_ENDPOINT", "CIVITAI_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
             "NO_PROXY", "no_proxy")
STDERR_TAIL = 20

OnEvent = Callable[[dict], None]


def container_name(deployment: str) -> str:
    return f"sdtui-{deployment}-fetch"


def tokens() -> dict[str, str]:
    """The caller's tokens, for the job's stdin only."""
    found = {"HF_TOKEN": hf.token(), "CIVITAI_API_TOKEN": civitai.token()}
    return {k: v for k, v in found.items() if v}


def environment(region: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in FORWARDED if os.environ.get(k)}
    env |= {"AWS_DEFAULT_REGION": region, "HF_HUB_DISABLE_TELEMETRY": "1"}
    if credentials := test_credentials():  # tests against moto only: static test keys
        env |= {"AWS_ACCESS_KEY_ID": credentials[0], "AWS_SECRET_ACCESS_KEY": credentials[1]}
    return env


def job(bucket: str, prefix: str, sets: list[Resolved]) -> bytes:
    return json.dumps({"bucket": bucket, "prefix": prefix, "staging": STAGING_IN_CONTAINER,
                       "sets": [r.to_json() for r in sets], "tokens": tokens()}).encode() + b"\n"


def _remove_leftover(engine: docker.DockerClient, deployment: str, ledger: Ledger) -> None:
    """A fetch container an interrupted run left: ours only by the ledger's record."""
    name = container_name(deployment)
    try:
        old = engine.containers.get(name)
    except docker.errors.NotFound:
        ledger.forget("container", name)
        return
    if name not in {e.id for e in ledger.resources("container")}:
        raise not_ours([f"container {name}"], deployment)
    old.remove(force=True)
    ledger.forget("container", name)


def run_fetch(engine: docker.DockerClient, *, deployment: str, image: str, staging: str,
              environment: dict[str, str], job: bytes, ledger: Ledger, on_event: OnEvent,
              cancel: threading.Event) -> dict:
    """Run the fetch on the instance; returns its `done` event, raises on its `error`."""
    _remove_leftover(engine, deployment, ledger)
    api = engine.api
    host_config = api.create_host_config(
        network_mode="host", mounts=[Mount(STAGING_IN_CONTAINER, staging, type="bind")],
        log_config=LogConfig(type="json-file", config={"max-size": "5m", "max-file": "1"}),
        restart_policy={"Name": "no"})
    config = api.create_container_config(
        image, [], entrypoint=RUNNER, stdin_open=True, tty=False, environment=environment,
        labels={LABEL: deployment, ROLE_LABEL: "fetch"}, host_config=host_config)
    name = container_name(deployment)
    ledger.record("container", name)  # before it exists: a crash right after loses nothing
    created = api.create_container_from_config(config, name=name)
    container = engine.containers.get(created["Id"])
    finished = threading.Event()

    def stop_on_cancel() -> None:
        while not finished.wait(0.2):
            if cancel.is_set():
                with contextlib.suppress(docker.errors.DockerException, OSError):
                    container.kill()
                return

    try:
        sock = api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                        "stream": 1})
        api._disable_socket_timeout(sock)
        container.start()
        raw = getattr(sock, "_sock", sock)
        raw.sendall(job)
        threading.Thread(target=stop_on_cancel, daemon=True).start()
        last, errors = _read(sock, on_event)
        with contextlib.suppress(OSError):
            sock.close()
        status = container.wait(timeout=60).get("StatusCode")
    finally:
        finished.set()
        with contextlib.suppress(docker.errors.DockerException, OSError):
            container.remove(force=True)
        ledger.forget("container", name)
    if cancel.is_set():
        raise Interrupted("the fetch on the instance was interrupted",
                          fix="run the same command again: it resumes where it stopped")
    if last.get("type") == "error":
        raise DeploymentError(str(last.get("message")), fix=last.get("fix"))
    if last.get("type") != "done" or status != 0:
        why = errors[-1] if errors else f"exit status {status}"
        raise DeploymentError(f"the fetch on the instance failed: {why}",
                              fix="run sdtui again: what was fetched is kept and resumed")
    return last


def _read(sock, on_event: OnEvent) -> tuple[dict, list[str]]:
    """The runner's events, each passed on; returns the last one and the tail of its stderr."""
    last: dict = {}
    errors: list[str] = []
    buffers = {STDOUT: b"", STDERR: b""}
    for stream, chunk in frames_iter(sock, tty=False):
        if stream not in buffers or not chunk:
            continue
        *lines, buffers[stream] = (buffers[stream] + chunk).split(b"\n")
        for line in lines:
            if stream == STDERR:
                errors = [*errors, line.decode(errors="replace")][-STDERR_TAIL:]
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                last = event
                on_event(event)
    return last, [e for e in errors if e.strip()]
