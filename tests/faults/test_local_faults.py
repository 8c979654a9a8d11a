"""The fault-injection matrix for Option B: each fault injected while each step of the
deployment's plan runs, and during generation; then the same command again, then a teardown.

Every cell asserts what a user is promised:
- the fault itself ends the run with its documented exit code and one clear line, never a
  traceback;
- 0 lost images: every image the worker sent (its own log of its stdout is the record) is in
  the outputs exactly once, with its metadata intact, and nothing else is there;
- 0 leaked resources: after the teardown nothing carries the deployment's label, its ledger and
  its worker spool are gone (the shared worker image is documented as kept).

Faults are injected on a condition (an event on the --json stream, a container's state), never
after a sleep. Cells that do not exist, and why:
- the container killed or stopped: before the container step there is no worker container to
  kill (the volume step's and models step's helper containers are created, never started);
- a disk full (the outputs', the spool's, or one disk holding both): nothing is written to the
  outputs or the spool before generation. The spool's cells restart the worker before the same
  command runs again, so an image it sent but could not spool would be lost, and fail the cell.
- the engine restarted runs on a private dockerd (never the shared one); its cells are the
  steps that hold something in the engine when it goes: the copy helper (models), the new
  container (container), the model loading (attach) and the running worker (generate).

Adding a step is adding it to the deployment's plan; adding a fault is one `Fault(...)` line.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest
from local_cli import Cli, finished_by_worker, labelled, wait_for

from sdtui.deploy.local import LocalDeployment, LocalSettings
from sdtui.errors import EXIT_DEPLOYMENT, EXIT_GENERATION

from .matrix import (
    Fault,
    Tmpfs,
    assert_nothing_lost,
    cells,
    error_line,
    fault_then_again,
    fill_disk,
    free_disk,
    interrupt_client,
    interrupted,
    kill_client,
    kill_container,
    killed,
    stop_container,
)
from .private_engine import PrivateEngine

pytestmark = [pytest.mark.docker]

COMMAND = ("--prompt", "a lighthouse at dusk", "-n", "2", "--steps", "8", "--width", "64",
           "--height", "64", "--seed", "11", "--json")


def plan_steps() -> list[str]:
    """The step names of Option B's plan (planning creates nothing; the model is not read)."""

    class Unchecked(LocalSettings):
        def validate(self) -> None:
            return None

    return [step.name for step in LocalDeployment(Unchecked(name="plan-only")).plan()]


STEPS = (*plan_steps(), "generate")


@dataclass
class Cell:
    cli: Cli
    engine: docker.DockerClient
    step: str
    proc: subprocess.Popen | None = None
    private: PrivateEngine | None = None
    disk: Tmpfs | None = None
    seen: list[dict] = field(default_factory=list)

    def worker(self):
        found = labelled(self.engine, self.cli.name)[0]
        workers = [c for c in found if c.labels.get("sdtui.role") == "worker"]
        return workers[0] if workers else None


def free_disk_and_restart_worker(cell: Cell) -> None:
    """Space freed, and the worker restarted meanwhile (`docker restart`, a reboot): whatever
    it sent must have been on disk, not only in its memory."""
    cell.disk.free()
    worker = cell.worker()
    readies = worker.logs(stdout=True, stderr=False).count(b'"type":"ready"')
    worker.restart()
    wait_for(lambda: worker.logs(stdout=True, stderr=False).count(b'"type":"ready"') > readies,
             unless=lambda: worker.reload() or worker.status == "exited")


def stop_engine(cell: Cell) -> None:
    cell.private.stop()


def start_engine(cell: Cell) -> None:
    cell.private.start()


FAULTS = [
    Fault("sigkill", kill_client, killed, STEPS),
    Fault("sigint", interrupt_client, interrupted, STEPS),
    Fault("container-killed", kill_container,
          error_line(EXIT_GENERATION, "the worker was killed"), ("attach", "generate")),
    Fault("engine-restarted", stop_engine,
          error_line((EXIT_DEPLOYMENT, EXIT_GENERATION), "Docker engine"),
          ("models", "container", "attach", "generate"), repair=start_engine,
          needs="private_engine", slow=True),
    Fault("disk-full", fill_disk, error_line(EXIT_GENERATION, "No space left on device"),
          ("generate",), repair=free_disk, generate_at="progress", needs="tmpfs"),
    Fault("container-stopped", stop_container,
          error_line(EXIT_GENERATION, "the worker was stopped"), ("attach", "generate")),
    # Filled at the first step, before the worker writes any image to its spool.
    Fault("spool-disk-full", fill_disk, error_line(EXIT_GENERATION, "spool cannot keep"),
          ("generate",), repair=free_disk_and_restart_worker, generate_at="progress",
          needs="spool-tmpfs"),
    # The state dir (the spool with it) and --out on one small disk.
    Fault("one-disk-full", fill_disk, error_line(EXIT_GENERATION, "spool cannot keep"),
          ("generate",), repair=free_disk_and_restart_worker, generate_at="progress",
          needs="root-tmpfs"),
]


@pytest.fixture(scope="module")
def private_engine(docker_client, worker_image) -> Iterator[PrivateEngine]:
    engine = PrivateEngine()
    try:
        engine.start()
        engine.load_image(docker_client, worker_image)
        yield engine
    finally:
        engine.destroy()


@pytest.fixture
def cell(request, tmp_path, docker_client, worker_image) -> Iterator[Cell]:
    fault, step = request.node.callspec.params["fault"], request.node.callspec.params["step"]
    name = f"f-{uuid.uuid4().hex[:8]}"
    private = request.getfixturevalue("private_engine") if fault.needs == "private_engine" \
        else None
    root = tmp_path / "disk" if fault.needs == "root-tmpfs" else tmp_path
    disk = {"tmpfs": lambda: Tmpfs(tmp_path / "out"),
            "spool-tmpfs": lambda: Tmpfs(tmp_path / "state" / "worker-outputs", size="2m"),
            "root-tmpfs": lambda: Tmpfs(root, size="2m")}.get(fault.needs, lambda: None)()
    cli = Cli(root, name, f"sdtui-test-{name}", docker_host=private.url if private else None)
    engine = private.client() if private else docker_client
    made = Cell(cli, engine, step, private=private, disk=disk)
    try:
        yield made
    finally:
        if made.proc is not None and made.proc.poll() is None:
            made.proc.kill()
            made.proc.wait()
        if private is not None and not private.answers():
            private.start()
        containers, volumes = labelled(engine, name)
        for leftover in containers + volumes:
            leftover.remove(force=True)
        if disk is not None:
            disk.unmount()
        if private is not None:
            engine.close()


@pytest.mark.parametrize(("fault", "step"), cells(FAULTS, STEPS))
def test_a_fault_loses_nothing_and_leaks_nothing(fault: Fault, step: str, cell: Cell,
                                                 tiny_models) -> None:
    cli = cell.cli
    command = ("--model", str(tiny_models["ckpt"]), *COMMAND)

    fault_then_again(fault, step, cell, cli.popen, cli.run, command)
    worker = cell.worker()
    finished = finished_by_worker(worker)

    down = cli.run("--teardown", "--purge-volume")
    assert down.returncode == 0, down.stderr

    assert_nothing_lost(cli.out, finished)

    # 0 leaked resources
    assert labelled(cell.engine, cli.name) == ([], [])
    assert not (cli.state / "deployments" / f"{cli.name}.json").exists()
    assert not (cli.state / "worker-outputs" / cli.name).exists()
