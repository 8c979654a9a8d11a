"""Option B never deletes, replaces, uses or reports as its own a Docker object sdtui did not
create: ownership is the deployment's label and this state dir's ledger, both."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_cli import BASE, FAST, Cli, events, labelled, one_line, read_events, step_outcomes

from sdtui.deploy.base import run_steps
from sdtui.deploy.local import LocalDeployment, LocalSettings
from sdtui.errors import EXIT_BAD_INPUT, EXIT_DEPLOYMENT, EXIT_GENERATION, BadInput
from sdtui.outputs import read_index

pytestmark = [pytest.mark.docker]


@pytest.fixture
def users_volume(docker_client):
    """A volume made outside sdtui, as `docker volume create` makes it."""
    volume = docker_client.volumes.create(f"mine-{uuid.uuid4().hex[:6]}")
    yield volume.name
    for leftover in docker_client.volumes.list(filters={"name": volume.name}):
        leftover.remove(force=True)


def test_status_and_purge_of_a_volume_sdtui_never_used(users_volume, docker_client, tmp_path):
    cli = Cli(tmp_path, f"probe-{uuid.uuid4().hex[:6]}", users_volume)
    status = cli.run("--status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == f"{cli.name} (local): absent"  # nothing invented

    down = cli.run("--teardown", "--purge-volume")
    assert down.returncode == EXIT_BAD_INPUT
    line = one_line(down.stderr)
    assert f"volume {users_volume} was not created by sdtui" in line and "yours" in line
    assert docker_client.volumes.get(users_volume).name == users_volume


@pytest.mark.slow
def test_models_copied_into_the_users_volume_leave_it_theirs(users_volume, docker_client,
                                                             tmp_path, tiny_models,
                                                             worker_image):
    cli = Cli(tmp_path, f"own-{uuid.uuid4().hex[:6]}", users_volume)
    try:
        run = cli.run("--model", str(tiny_models["ckpt"]), "--prompt", "in your volume", *FAST,
                      "--json")
        assert run.returncode == 0, run.stderr
        evs = events(run.stdout)
        assert step_outcomes(evs)["volume"] == "skipped" and step_outcomes(evs)["models"] == "done"
        volume_step = next(e for e in evs if e["event"] == "step_finished"
                           and e["step"] == "volume")
        assert "yours (not created by sdtui)" in volume_step["detail"]
        status = cli.run("--status")
        assert f"volume     {users_volume}  present (kept on teardown) — yours" in status.stdout

        refused = cli.run("--teardown", "--purge-volume")
        assert refused.returncode == EXIT_BAD_INPUT
        assert f"volume {users_volume} was not created by sdtui" in one_line(refused.stderr)
        (container,) = labelled(docker_client, cli.name)[0]  # nothing was deleted
        assert container.status == "running"

        down = cli.run("--teardown")
        assert down.returncode == 0, down.stderr
        assert f"kept volume {users_volume}: yours (not created by sdtui)" in down.stderr
        assert labelled(docker_client, cli.name) == ([], [])
        assert docker_client.volumes.get(users_volume).name == users_volume
        assert not (cli.state / "deployments" / f"{cli.name}.json").exists()
        assert cli.run("--status").stdout.strip() == f"{cli.name} (local): absent"
    finally:
        for container in labelled(docker_client, cli.name)[0]:
            container.remove(force=True)


# --- what claims a deployment without this state dir's ledger -----------------------------------


@pytest.fixture
def foreign_container(request, docker_client):
    """A container sdtui did not make: labelled as a worker of the deployment, or bearing its
    worker container's name without any label."""
    name = f"fz-{uuid.uuid4().hex[:6]}"
    if request.param == "labelled":
        made = docker_client.containers.run(
            BASE, ["sleep", "3600"], detach=True, name=f"{name}-foreign",
            labels={"sdtui.deployment": name, "sdtui.role": "worker"})
    else:
        made = docker_client.containers.run(BASE, ["sleep", "3600"], detach=True,
                                            name=f"sdtui-{name}-worker")
    yield name, made
    made.remove(force=True)


@pytest.mark.parametrize("foreign_container", ["labelled", "named"], indirect=True)
def test_a_container_sdtui_did_not_create_is_never_replaced(foreign_container, docker_client,
                                                             tmp_path, tiny_models):
    name, theirs = foreign_container
    cli = Cli(tmp_path, name, f"sdtui-test-{name}")
    run = cli.run("--model", str(tiny_models["ckpt"]), "--prompt", "x", *FAST)
    try:
        assert run.returncode == EXIT_BAD_INPUT, run.stderr
        line = one_line(run.stderr)
        assert f"container {theirs.name} on this Docker engine claims deployment {name}" in line
        assert "choose another --name" in line
        theirs.reload()
        assert theirs.status == "running"  # neither replaced nor stopped
        assert docker_client.volumes.list(filters={"name": cli.volume}) == []  # nothing made
        assert not (cli.state / "deployments" / f"{name}.json").exists()
    finally:
        for container in labelled(docker_client, name)[0]:
            if container.id != theirs.id:
                container.remove(force=True)
        for volume in docker_client.volumes.list(filters={"name": cli.volume}):
            volume.remove(force=True)


@pytest.fixture
def deployed(tmp_path, docker_client, tiny_models, worker_image) -> Iterator[Cli]:
    """A deployment made by `sdtui --no-ui` with its own state dir; removed after."""
    tag = uuid.uuid4().hex[:6]
    cli = Cli(tmp_path / "a", f"sh-{tag}", f"sdtui-test-sh-{tag}")
    try:
        run = cli.run("--model", str(tiny_models["ckpt"]), "--prompt", "first", *FAST)
        assert run.returncode == 0, run.stderr
        yield cli
    finally:
        containers, volumes = labelled(docker_client, cli.name)
        for leftover in containers + volumes:
            leftover.remove(force=True)


@pytest.mark.slow
def test_another_state_dir_never_uses_or_deletes_a_deployment_of_the_same_name(
        deployed, docker_client, tmp_path, tiny_models):
    """Two users of one engine (two state dirs) with one deployment name: the second is
    refused before anything is touched, and its teardown deletes nothing of the first's."""
    (worker,), (volume,) = labelled(docker_client, deployed.name)
    other = Cli(tmp_path / "b", deployed.name, deployed.volume)

    run = other.run("--model", str(tiny_models["ckpt"]), "--prompt", "mine", *FAST)
    assert run.returncode == EXIT_BAD_INPUT, run.stderr
    line = one_line(run.stderr)
    assert f"container {worker.name}, volume {volume.name} on this Docker engine" in line
    assert not (other.state / "deployments" / f"{deployed.name}.json").exists()

    purge = other.run("--teardown", "--purge-volume")
    assert purge.returncode == EXIT_BAD_INPUT, purge.stderr
    assert f"volume {volume.name} was not created by sdtui" in one_line(purge.stderr)

    down = other.run("--teardown")
    assert down.returncode == 0, down.stderr
    assert f"kept container {worker.name}: it carries this deployment's label" in down.stderr
    assert f"kept volume {volume.name}:" in down.stderr
    assert other.run("--status").stdout.strip() == f"{deployed.name} (local): absent"

    worker.reload()
    assert worker.status == "running"
    assert labelled(docker_client, deployed.name) == ([worker], [volume])
    again = deployed.run("--prompt", "still mine", *FAST)  # the first user's goes on
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_a_paused_worker_is_one_line_with_the_fix(deployed, docker_client):
    (worker,), _ = labelled(docker_client, deployed.name)
    worker.pause()
    try:
        run = deployed.run("--prompt", "x", *FAST)
        assert run.returncode == EXIT_DEPLOYMENT, run.stderr
        line = one_line(run.stderr)
        assert f"the worker container {worker.name} is paused" in line
        assert f"docker unpause {worker.name}" in line
    finally:
        worker.unpause()
    assert deployed.run("--prompt", "x", *FAST).returncode == 0


@pytest.mark.slow
def test_a_teardown_by_another_client_is_named_to_the_one_generating(deployed, docker_client):
    generating = deployed.popen("--prompt", "long", "-n", "16", "--steps", "20", "--width", "64",
                                "--height", "64", "--json")
    try:
        next(ev for ev in read_events(generating) if ev["event"] == "image")
        # --force: a teardown while another client is attached is refused without it.
        down = deployed.run("--teardown", "--force")
        assert down.returncode == 0, down.stderr
        _, err = generating.communicate(timeout=300)
    finally:
        if generating.poll() is None:
            generating.kill()
    assert generating.returncode == EXIT_GENERATION, err
    line = one_line(err)
    assert "the deployment was torn down" in line and "killed" not in line
    assert read_index(deployed.out)  # what it saved is kept


@pytest.mark.parametrize("foreign_container", ["named"], indirect=True)
def test_the_container_step_itself_never_replaces_a_container_it_did_not_create(
        foreign_container, tmp_path, monkeypatch, tiny_models):
    """The step that creates the worker checks too (Option A's runs on the instance without the
    engine step's check; here one appears after that check): one line, nothing removed."""
    name, theirs = foreign_container
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    deployment = LocalDeployment(LocalSettings([tiny_models["ckpt"]], name=name))
    (step,) = [s for s in deployment.plan() if s.name == "container"]
    with pytest.raises(BadInput, match=f"container {theirs.name} on this Docker engine claims "
                                       f"deployment {name}"):
        run_steps([step], lambda ev: None)
    theirs.reload()
    assert theirs.status == "running"


class DefaultCli(Cli):
    """A user with their own state dir who names nothing: the default deployment and volume
    (`name` is learnt from the ledger the first run writes)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "", "")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sdtui", "--no-ui", "--base-image", BASE, "--out",
                str(self.out), *args]


@pytest.mark.slow
def test_two_state_dirs_on_one_engine_never_share_a_default_deployment(
        docker_client, tmp_path, tiny_models, worker_image):
    """Two users of one engine, each with their own state dir, both run the README's first
    headless example at the same time: each gets its own deployment, worker and volume, and
    saves its own images; a clash on a name is refused before anything is touched, and one
    user's teardown leaves the other's worker and volume."""
    users = [DefaultCli(tmp_path / "a"), DefaultCli(tmp_path / "b")]
    runs: list[subprocess.Popen] = []
    try:
        runs += [cli.popen("--model", str(tiny_models["ckpt"]), "--prompt", "x", *FAST)
                for cli in users]
        for run in runs:
            _, stderr = run.communicate(timeout=900)
            assert run.returncode == 0, stderr
        for cli in users:
            (ledger,) = (cli.state / "deployments").glob("*.json")
            cli.name = ledger.stem
            status = cli.run("--status").stdout
            assert re.fullmatch(r"local-[0-9a-f]{6}", cli.name), status
            assert f"{cli.name} (local): ready" in status
        a, b = users
        assert a.name != b.name
        (worker_a,), (volume_a,) = labelled(docker_client, a.name)
        (worker_b,), (volume_b,) = labelled(docker_client, b.name)
        assert worker_a.name != worker_b.name and volume_a.name != volume_b.name
        for cli in users:
            (image,) = read_index(cli.out)
            assert image["deployment"] == cli.name and (cli.out / image["file"]).is_file()

        clash = b.run("--name", a.name, "--prompt", "y", *FAST)  # B names A's deployment
        assert clash.returncode == EXIT_BAD_INPUT, clash.stderr
        assert f"container {worker_a.name}, volume {volume_a.name}" in one_line(clash.stderr)
        down = b.run("--name", a.name, "--teardown")
        assert down.returncode == 0, down.stderr
        assert labelled(docker_client, a.name) == ([worker_a], [volume_a])

        down = a.run("--teardown", "--purge-volume")
        assert down.returncode == 0, down.stderr
        assert labelled(docker_client, a.name) == ([], [])
        worker_b.reload()
        assert worker_b.status == "running"
        assert labelled(docker_client, b.name) == ([worker_b], [volume_b])
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
        for ledger in {p.stem for cli in users for p in (cli.state / "deployments").glob("*.json")}:
            for leftover in sum(labelled(docker_client, ledger), []):
                leftover.remove(force=True)
