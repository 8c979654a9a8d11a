"""The fault-injection matrix for Option A, on the moto + sshd + s3fs harness (see
tests/aws/test_end_to_end.py): moto over HTTP for AWS, an sshd on 127.0.0.1 "booted" with the
instance's host key when moto shows it running, the real bootstrap over SSH, s3fs mounting the
moto bucket, the Docker SDK over ssh:// to this machine's engine, the real worker.

Each cell: the command until the fault's condition, the fault, the same command again, then
`--teardown --purge-bucket`; then 0 lost images (every image the worker sent is saved exactly
once, its metadata intact), 0 leaked resources (nothing tagged left in moto, no labelled
container, no ledger, no key files), and one clear line with the documented exit code.

Which cells exist, and why the others do not:
- sigkill at upload (a multipart upload cut short), instance (launched, perhaps not yet
  recorded: the tag finds it), bootstrap (the host script cut short over SSH) and generation
  (the request goes on: the next run adopts it). The other AWS steps (identity, ami, bucket,
  iam, access) are single API calls recorded before or right after they create anything, the
  same situation as upload and instance; image, container and attach are the same Docker SDK
  calls as Option B, whose matrix has those cells.
- sigint during generation (cancel: finished images kept); during provisioning it takes the
  same path for both options (run_steps), covered by Option B's matrix.
- the SSH connection dropped (its sshd session process killed) during the bootstrap and
  during generation: the two kinds of SSH use (a remote script; the Docker SDK's attach).
- the worker container killed, and the outputs disk full: during generation only (before it
  there is no worker, and nothing is written to the outputs).
- the engine restarted is Option B's (a private dockerd); here the "instance" engine is the
  shared one, which is never restarted.
The whole Option A matrix is `slow` (each cell provisions a whole deployment over SSH).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import cli_zygote
import docker
import pytest
from aws.conftest import aws, aws_env  # noqa: F401 (the moto harness; its servers: tests/conftest.py)
from aws.instance_sandbox import instance_sandbox
from aws.registry import remove_tags
from aws.sshd import FakeBoot, free_port
from local_cli import BASE, finished_by_worker, labelled, wait_for

from sdtui.deploy.aws.deployment import AwsDeployment
from sdtui.deploy.aws.naming import tag_filter
from sdtui.deploy.aws.settings import AwsSettings
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
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GENERATE = ("--prompt", "a lighthouse at dusk", "-n", "2", "--steps", "8", "--width", "64",
            "--height", "64", "--seed", "11", "--json")


def plan_steps() -> list[str]:
    class Unchecked(AwsSettings):
        def validate(self) -> None:
            return None

    # A model file to upload, as every cell's run has: the upload step is planned only then.
    deployment = AwsDeployment(Unchecked(name="plan-only", region="us-east-1", bucket="plan-only",
                                         models=[Path("plan-only.ckpt")]))
    return [step.name for step in deployment.plan()]


STEPS = (*plan_steps(), "generate")


@dataclass
class Cell:
    name: str
    root: Path
    engine: docker.DockerClient
    boot: FakeBoot
    proc: subprocess.Popen | None = None
    disk: Tmpfs | None = None
    seen: list[dict] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sdtui", "--no-ui", "--option", "aws", "--name", self.name,
                *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "SDTUI_STATE_DIR": str(self.state),
                "SDTUI_CONFIG_DIR": str(self.root / "config"), "PYTHONUNBUFFERED": "1"}

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return cli_zygote.run(self.argv(*args)[3:], env=self.env(), text=True, timeout=900)

    def worker(self):
        found = labelled(self.engine, self.name)[0]
        return found[0] if found else None


def drop_ssh(cell: Cell) -> None:
    """Every SSH session to the "instance" dies (the listener stays, as on a network drop)."""
    wait_for(lambda: cell.boot.sshd is not None and cell.boot.sshd.drop_sessions() > 0,
             unless=lambda: cell.proc.poll() is not None)


FAULTS = [
    Fault("sigkill", kill_client, killed, ("upload", "instance", "bootstrap", "generate")),
    Fault("sigint", interrupt_client, interrupted, ("generate",)),
    Fault("ssh-dropped", drop_ssh,
          error_line((EXIT_DEPLOYMENT, EXIT_GENERATION), "connection", "SSH", "bootstrap"),
          ("bootstrap", "generate"), step_at="step_log"),
    Fault("container-killed", kill_container,
          error_line(EXIT_GENERATION, "the worker was killed"), ("generate",)),
    Fault("disk-full", fill_disk, error_line(EXIT_GENERATION, "No space left on device"),
          ("generate",), repair=free_disk, generate_at="progress", needs="tmpfs"),
]


@pytest.fixture
def cell(request, tmp_path, monkeypatch, aws, docker_client, worker_image,  # noqa: F811
         ecr_registry) -> Iterator[Cell]:
    fault = request.node.callspec.params["fault"]
    name = f"fa-{uuid.uuid4().hex[:6]}"
    port = free_port()
    host = tmp_path / "host"
    instance_sandbox(monkeypatch, host, port, ecr_registry)
    boot = FakeBoot(aws["ec2"], name, tmp_path / "sshd", port)
    disk = Tmpfs(tmp_path / "out") if fault.needs == "tmpfs" else None
    made = Cell(name, tmp_path, docker_client, boot, disk=disk)
    monkeypatch.setenv("SDTUI_STATE_DIR", str(made.state))  # the keys FakeBoot reads
    boot.start()
    try:
        yield made
    finally:
        if made.proc is not None and made.proc.poll() is None:
            made.proc.kill()
            made.proc.wait()
        boot.stop.set()
        boot.join(10)
        for container in labelled(docker_client, name)[0]:
            container.remove(force=True)
        remove_tags(docker_client, f"{ecr_registry}/sdtui-{name}")
        subprocess.run(["umount", "-l", str(host / "mnt/sd-data")], capture_output=True)
        if boot.sshd is not None:
            boot.sshd.stop()
        if disk is not None:
            disk.unmount()


def tagged(aws, name: str) -> list[str]:  # noqa: F811
    ec2, iam = aws["ec2"], aws["iam"]
    found = [i["InstanceId"] for r in ec2.describe_instances(Filters=[tag_filter(name)])[
        "Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    found += [g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[tag_filter(name)])["SecurityGroups"]]
    found += [k["KeyName"] for k in ec2.describe_key_pairs(Filters=[tag_filter(name)])["KeyPairs"]]
    found += [r["RoleName"] for r in iam.list_roles()["Roles"] if name in r["RoleName"]]
    found += [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
              if name in p["InstanceProfileName"]]
    found += [b["Name"] for b in aws["s3"].list_buckets()["Buckets"] if name in b["Name"]]
    found += [r["repositoryName"] for r in boto3.client("ecr").describe_repositories()[
        "repositories"] if name in r["repositoryName"]]
    return found


@pytest.mark.parametrize(("fault", "step"), cells(FAULTS, STEPS))
def test_a_fault_loses_nothing_and_leaks_nothing(fault: Fault, step: str, cell: Cell,
                                                 tiny_models, aws) -> None:  # noqa: F811
    command = ("--bucket", f"sdtui-{cell.name}", "--model", str(tiny_models["ckpt"]),
               "--base-image", BASE, "--ssh-cidr", "203.0.113.7/32", "--out", str(cell.out),
               *GENERATE)

    fault_then_again(fault, step, cell, cell.popen, cell.run, command)
    assert cell.boot.error is None
    finished = finished_by_worker(cell.worker())

    down = cell.run("--teardown", "--purge-bucket")
    assert down.returncode == 0, down.stderr

    assert_nothing_lost(cell.out, finished)
    assert tagged(aws, cell.name) == []
    assert labelled(cell.engine, cell.name) == ([], [])
    assert not (cell.state / "deployments" / f"{cell.name}.json").exists()
    assert not list((cell.state / "keys").glob(f"{cell.name}*"))
