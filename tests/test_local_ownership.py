"""Option B never deletes, or reports as its own, a Docker volume sdtui did not create: ownership
is the deployment's label and its ledger, both."""

from __future__ import annotations

import uuid

import pytest
from local_cli import FAST, Cli, events, labelled, one_line, step_outcomes

from sdtui.errors import EXIT_BAD_INPUT

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
