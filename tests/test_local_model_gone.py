"""Option B after the model file is deleted on this machine: the volume holds its copy and the
worker has it loaded, so every run that needs no upload goes on (the recovery run saves what
the worker finished, new prompts generate). A first run of a path that does not exist is still
refused before anything is created."""

from __future__ import annotations

import shutil

import pytest
from local_cli import (
    FAST,
    events,
    labelled,
    one_line,
    read_events,
    step_outcomes,
    throwaway_cli,
    wait_for,
)

from sdtui.errors import EXIT_BAD_INPUT
from sdtui.modelfiles import model_files
from sdtui.outputs import read_index
from sdtui.worker import spool

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_runs_go_on_after_the_model_file_is_deleted_on_this_machine(
        tmp_path, tiny_models, docker_client, worker_image):
    own = tmp_path / "models"  # the user's copy of the checkpoint and its sidecar config
    for source, name in model_files(tiny_models["ckpt"]):
        (own / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, own / name)
    model = own / tiny_models["ckpt"].name
    with throwaway_cli(tmp_path / "cli", docker_client) as cli:
        # A client killed mid-batch: the worker finishes both images into its spool.
        killed = cli.popen("--model", str(model), "--prompt", "unsaved", "-n", "2", *FAST,
                           "--json")
        rid = next(ev for ev in read_events(killed) if ev["event"] == "progress")["id"]
        killed.kill()
        killed.wait()
        spool_dir = cli.state / "worker-outputs" / cli.name
        (worker,) = labelled(docker_client, cli.name)[0]
        wait_for(lambda: spool.count(spool_dir) == 2,
                 unless=lambda: (worker.reload(), worker.status)[1] != "running")

        shutil.rmtree(own)
        status = cli.run("--status")
        assert "2 unsaved image(s)" in status.stdout, status.stdout + status.stderr

        recovery = cli.run("--json")
        assert recovery.returncode == 0, recovery.stderr
        outcomes = step_outcomes(events(recovery.stdout))
        assert outcomes["models"] == outcomes["container"] == "skipped"
        assert sorted(r["index"] for r in read_index(cli.out) if r["request"] == rid) == [0, 1]
        assert spool.count(spool_dir) == 0

        again = cli.run("--prompt", "after the file went", *FAST, "--json")
        assert again.returncode == 0, again.stderr
        assert [e["event"] for e in events(again.stdout) if e["event"] == "image"] == ["image"]
        (same,) = labelled(docker_client, cli.name)[0]
        assert same.id == worker.id  # attached to the same worker: nothing was replaced

        # Without the worker that had it loaded, the file is needed again: one line, and
        # nothing is created.
        same.remove(force=True)
        refused = cli.run("--prompt", "no worker", *FAST)
        assert refused.returncode == EXIT_BAD_INPUT
        assert "the worker container that had it loaded is gone" in one_line(refused.stderr)
        assert labelled(docker_client, cli.name)[0] == []

        down = cli.run("--teardown", "--purge-volume")
        assert down.returncode == 0, down.stderr
        # Nothing recorded any more: the missing file is a first run's bad input again.
        first = cli.run("--model", str(model), "--prompt", "x", *FAST)
        assert first.returncode == EXIT_BAD_INPUT
        assert f"model file {model} does not exist" in one_line(first.stderr)
        assert labelled(docker_client, cli.name) == ([], [])
