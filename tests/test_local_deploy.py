"""Option B end to end through the real Docker engine, the real worker image and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
from PIL import Image

from sdtui.modelfiles import sha256_file
from sdtui.outputs import read_index, read_metadata

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = os.environ.get("SDTUI_TEST_BASE_IMAGE", "sdtui-base:offline")
FAST = ["--steps", "4", "--width", "64", "--height", "64"]


class Cli:
    """`sdtui --no-ui` as a user runs it, with its own state, config and outputs dirs."""

    def __init__(self, root: Path, name: str, volume: str) -> None:
        self.root, self.name, self.volume = root, name, volume
        self.out = root / "out"
        self.env = {**os.environ, "SDTUI_STATE_DIR": str(root / "state"),
                    "SDTUI_CONFIG_DIR": str(root / "config"), "PYTHONUNBUFFERED": "1"}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sdtui", "--no-ui", "--name", self.name,
                "--volume", self.volume, "--base-image", BASE, "--out", str(self.out), *args]

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=900, **kw)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def step_outcomes(evs: list[dict]) -> dict[str, str]:
    return {e["step"]: e["outcome"] for e in evs if e["event"] == "step_finished"}


def labelled(client: docker.DockerClient, name: str) -> tuple[list, list]:
    f = {"label": f"sdtui.deployment={name}"}
    return client.containers.list(all=True, filters=f), client.volumes.list(filters=f)


@pytest.fixture(scope="module")
def cli(tmp_path_factory, worker_image, docker_client):
    tag = uuid.uuid4().hex[:6]
    c = Cli(tmp_path_factory.mktemp("cli"), f"t-{tag}", f"sdtui-test-{tag}")
    yield c
    for container in labelled(docker_client, c.name)[0]:
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"name": c.volume}):
        volume.remove(force=True)


def test_first_run_provisions_everything_and_saves_two_images(cli, tiny_models, docker_client):
    r = cli.run("--model", str(tiny_models["ckpt"]), "--prompt", "a red barn", "-n", "2",
                "--seed", "42", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    evs = events(r.stdout)
    outcomes = step_outcomes(evs)
    assert list(outcomes) == ["engine", "volume", "image", "models", "container", "attach"]
    assert outcomes["volume"] == outcomes["models"] == outcomes["container"] == "done"
    assert any(e["event"] == "step_progress" and e["step"] == "models" for e in evs)
    saved = [Path(e["path"]) for e in evs if e["event"] == "image"]
    assert len(saved) == 2 and all(p.parent == cli.out for p in saved)
    for path, seed in zip(saved, (42, 43), strict=True):
        assert Image.open(path).size == (64, 64)
        meta = read_metadata(path)
        assert meta["params"]["seed"] == seed and meta["params"]["prompt"] == "a red barn"
        assert f"Seed: {seed}" in meta["parameters"] and "Steps: 4" in meta["parameters"]
        # the checkpoint's sha256, hashed for the copy into the volume: A1111's 10 digits,
        # InvokeAI's whole hash
        sha = sha256_file(tiny_models["ckpt"])
        assert f"Model hash: {sha[:10]}," in meta["parameters"]
        assert meta["sd-metadata"]["model_hash"] == sha
    index = read_index(cli.out)
    assert sorted(line["params"]["seed"] for line in index) == [42, 43]
    # the sidecar config travelled with the checkpoint without being named
    containers, volumes = labelled(docker_client, cli.name)
    assert len(containers) == 1 and containers[0].status == "running"


def test_second_run_reuses_everything_without_reloading(cli, tiny_models, docker_client):
    (before,) = labelled(docker_client, cli.name)[0]
    r = cli.run("--prompt", "a blue barn", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    evs = events(r.stdout)
    outcomes = step_outcomes(evs)
    assert outcomes == {"engine": "done", "volume": "skipped", "image": "skipped",
                        "models": "skipped", "container": "skipped", "attach": "done"}
    attach = next(e for e in evs if e["event"] == "step_finished" and e["step"] == "attach")
    assert "reattached, model already loaded" in attach["detail"]
    (after,) = labelled(docker_client, cli.name)[0]
    assert after.id == before.id
    assert docker_client.api.inspect_container(after.id)["RestartCount"] == 0
    assert len([e for e in evs if e["event"] == "image"]) == 1


def test_a_prompt_file_on_stdin_runs_one_request_per_line(cli):
    r = cli.run("--prompt-file", "-", *FAST, "--seed", "5", "--json",
                input="# a comment line\na green barn\n\na yellow barn\n")
    assert r.returncode == 0, r.stderr
    saved = [Path(e["path"]) for e in events(r.stdout) if e["event"] == "image"]
    assert [read_metadata(p)["params"]["prompt"] for p in saved] == ["a green barn",
                                                                    "a yellow barn"]


def test_a_killed_client_loses_no_finished_image(cli):
    before = {p.name for p in cli.out.glob("*.png")}
    proc = cli.popen("--prompt", "a long batch", "-n", "3", "--steps", "25", "--width", "64",
                     "--height", "64", "--seed", "7", "--json")
    for line in proc.stdout:
        if '"event": "progress"' in line and '"index": 0' in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(8)  # the worker goes on with the batch while nobody is attached
    r = cli.run("--json")
    assert r.returncode == 0, r.stderr
    recovered = [e for e in events(r.stdout) if e["event"] == "recovered"]
    new = {p.name for p in cli.out.glob("*.png")} - before
    assert len(recovered) >= 1 and len(new) >= len(recovered)
    seeds = sorted(read_metadata(cli.out / n)["params"]["seed"] for n in new)
    assert seeds == sorted(set(seeds)) and set(seeds) <= {7, 8, 9}


def test_ctrl_c_cancels_the_request_keeps_its_images_and_the_container(cli, docker_client):
    before = set(cli.out.glob("*.png"))
    proc = cli.popen("--prompt", "interrupted", "-n", "4", "--steps", "30", "--width", "64",
                     "--height", "64", "--json")
    images = 0
    for line in proc.stdout:
        if '"event": "image"' in line:
            images += 1
        if images == 1 and '"event": "progress"' in line and '"index": 1' in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    done = [e for e in events(rest) if e["event"] == "done"]
    assert done and done[-1]["cancelled"] is True and done[-1]["images"] >= 1
    assert len(set(cli.out.glob("*.png")) - before) == done[-1]["images"]
    (container,) = labelled(docker_client, cli.name)[0]
    assert container.status == "running"
    r = cli.run("--status")
    assert f"{cli.name} (local): ready" in r.stdout


def test_status_lists_what_exists(cli):
    r = cli.run("--status")
    assert r.returncode == 0, r.stderr
    assert f"{cli.name} (local): ready" in r.stdout
    assert "container" in r.stdout and cli.volume in r.stdout


def test_bad_input_exits_2_and_creates_nothing(cli, tmp_path, docker_client):
    fresh = Cli(tmp_path, "t-bad", "sdtui-test-bad")
    notmodel = tmp_path / "notes.txt"
    notmodel.write_text("hello")
    cases = [
        (["--model", str(tmp_path / "nope.ckpt"), "--prompt", "x"], 2, "does not exist"),
        (["--model", str(notmodel), "--prompt", "x"], 2, "notes.txt"),
        (["--model", str(notmodel), "--prompt", "x", "--width", "65"], 2, "multiple of 8"),
        (["--prompt", "x", "--steps", "0"], 2, "steps must be from 1 to 150"),
        (["--prompt", "x", "--scheduler", "warp"], 2, "valid schedulers"),
    ]
    for argv, code, needle in cases:
        r = fresh.run(*argv)
        assert r.returncode == code, (argv, r.stderr)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert labelled(docker_client, "t-bad") == ([], [])
    assert not (tmp_path / "state" / "deployments" / "t-bad.json").exists()


def test_no_engine_is_one_clear_line(tmp_path, tiny_models):
    fresh = Cli(tmp_path, "t-noengine", "sdtui-test-noengine")
    fresh.env["DOCKER_HOST"] = f"unix://{tmp_path}/no.sock"
    r = fresh.run("--model", str(tiny_models["ckpt"]), "--prompt", "x", *FAST)
    assert r.returncode == 3
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert "Docker" in line and "DOCKER_HOST" in line


def test_teardown_purge_leaves_nothing_labelled(cli, docker_client):
    r = cli.run("--teardown", "--purge-volume")
    assert r.returncode == 0, r.stderr
    assert labelled(docker_client, cli.name) == ([], [])
    assert docker_client.volumes.list(filters={"name": cli.volume}) == []
    r = cli.run("--status")
    assert f"{cli.name} (local): absent" in r.stdout
