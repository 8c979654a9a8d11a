"""The app against the real Option B: the real Docker engine, the worker image built from
Dockerfile.local on the offline base, the tiny model copied into a real volume, the real worker
container. Driven with the Pilot, and as the `sdtui` executable in tmux."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from textual.widgets import Input, TextArea

from sdtui.outputs import read_index, read_metadata
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen
from sdtui.ui.screens.teardown import TeardownModal
from sdtui.ui.widgets.gallery import Gallery
from sdtui.ui.widgets.steps import StepRow

from .conftest import given
from .terminal import Tmux
from .test_flows import SIZE, steps_ended, text_of, until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = os.environ.get("SDTUI_TEST_BASE_IMAGE", "sdtui-base:offline")
SLOW_S = 900  # building, copying and loading on a busy 2-core machine


def labelled(client: docker.DockerClient, name: str) -> list:
    return client.containers.list(all=True, filters={"label": f"sdtui.deployment={name}"})


def throwaway_deployment(docker_client: docker.DockerClient, prefix: str = "ui"
                         ) -> Iterator[str]:
    """A unique deployment name (its volume: sdtui-test-NAME), removed from the engine
    afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    yield name
    for container in labelled(docker_client, name):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"name": f"sdtui-test-{name}"}):
        volume.remove(force=True)


@pytest.fixture
def deployment_name(docker_client: docker.DockerClient, worker_image: str) -> Iterator[str]:
    yield from throwaway_deployment(docker_client)


@pytest.mark.asyncio
async def test_pilot_choose_provision_generate_teardown(
        deployment_name, tiny_models, isolated_dirs, docker_client) -> None:
    volume = f"sdtui-test-{deployment_name}"
    out = isolated_dirs / "outputs"
    app = SdtuiApp(Services(out_dir=out, serve_port=0, given=given(
        option="local", name=deployment_name, volume=volume, base_image=BASE,
        models=str(tiny_models["ckpt"]))))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        provision = app.screen
        states: dict[str, str] = {}

        def provisioned() -> bool:  # the rows as last seen before the prompt panel replaced them
            if app.screen is provision:
                states.update({row.step_name: row.state for row in provision.query(StepRow)})
            return isinstance(app.screen, PromptScreen)

        await until(pilot, provisioned, timeout=SLOW_S)
        assert list(states) == ["engine", "volume", "image", "models", "container", "attach"]
        assert states["volume"] == states["models"] == states["container"] == "done"
        assert app.deployment_label == f"{deployment_name} (local)"
        assert [c.status for c in labelled(docker_client, deployment_name)] == ["running"]

        screen = app.screen
        screen.query_one("#prompt", TextArea).text = "a red barn"
        for name, value in (("steps", "4"), ("width", "64"), ("height", "64")):
            screen.query_one(f"#{name}", Input).value = value
        await pilot.press("ctrl+g")
        gallery = screen.query_one("#gallery", Gallery)
        await until(pilot, lambda: gallery.images and not screen.generating, timeout=SLOW_S)
        image = gallery.images[0]
        assert image.path.is_file() and image.path.parent == out
        assert read_metadata(image.path)["params"]["prompt"] == "a red barn"
        assert f"saved {image.path}" in text_of(app, "#saved-path")
        assert screen.query_one("#image").image is not None

        # f2 serves this deployment behind A1111's API; a request sent to it lands in the
        # same outputs, and the status bar says where it is served and what it has queued
        await pilot.press("f2")
        await until(pilot, lambda: "http://127.0.0.1:" in app.api_label, timeout=SLOW_S)
        url = app.api_label.split()[1]
        assert "(no auth, this machine only)" in text_of(app, "StatusBar")
        answer = await asyncio.to_thread(requests.post, f"{url}/sdapi/v1/txt2img", json={
            "prompt": "from the api", "steps": 2, "width": 64, "height": 64}, timeout=SLOW_S)
        assert answer.status_code == 200, answer.text
        assert [r["params"]["prompt"] for r in read_index(out)] == ["a red barn", "from the api"]
        await until(pilot, lambda: "· 0 queued" in text_of(app, "StatusBar"), timeout=60)
        await pilot.press("f2")
        assert app.api_label == "" and url not in text_of(app, "StatusBar")
        await until(pilot, lambda: _refused(url), timeout=60)

        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal), timeout=120)
        deleted, kept = text_of(app, "#teardown-list").split("Kept:")
        assert "container" in deleted and f"volume {volume}" in kept
        await pilot.click("#confirm")
        await until(pilot, lambda: steps_ended(app, "teardown"), timeout=300)
        assert "removed container" in text_of(app, "#error")
        assert labelled(docker_client, deployment_name) == []
        assert docker_client.volumes.get(volume).name == volume  # the models are kept
        assert image.path.is_file()  # and so are the images


def _refused(url: str) -> bool:
    try:
        requests.get(f"{url}/sdapi/v1/progress", timeout=5)
    except requests.ConnectionError:
        return True
    return False


def sdtui_executable() -> Path:
    exe = Path(sys.executable).with_name("sdtui")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: pip install -e . (it installs the sdtui command)")
    return exe


def test_sdtui_in_a_terminal_choose_provision_prompt_image_quit(
        deployment_name, tiny_models, isolated_dirs, docker_client) -> None:
    out = isolated_dirs / "outputs"
    env = {"SDTUI_STATE_DIR": isolated_dirs / "state", "SDTUI_CONFIG_DIR": isolated_dirs / "config",
           "SDTUI_OUTPUTS_DIR": out, "SDTUI_IMAGE_PROTOCOL": "halfcell", "TERM": "xterm-256color"}
    argv = [str(sdtui_executable()), "--name", deployment_name,
            "--volume", f"sdtui-test-{deployment_name}", "--base-image", BASE,
            "--model", str(tiny_models["diffusers"]), "--prompt", "a lighthouse at dusk",
            "--steps", "4", "--width", "64", "--height", "64", "--seed", "42"]
    command = "env " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + " " \
        + shlex.join(argv)
    term = Tmux(f"sdtui-test-{deployment_name}")
    term.start(command)
    try:
        first = term.wait_for("Provision", timeout=60)
        assert "Option B — local" in first and "Existing deployments" in first
        term.keys("C-s")
        term.wait_for("Provisioning", timeout=60)
        term.wait_for("Gallery", timeout=SLOW_S)
        term.wait_for("a lighthouse at dusk", timeout=30)  # the --prompt flag filled the form
        term.wait_for(f"deployment: {deployment_name} (local)  │  worker: ready", timeout=30)
        seen = "\n".join(term.frames)
        assert "✓ Check the Docker engine" in seen  # the step marks were on the screen
        term.keys("C-g")
        term.wait_for("1 image(s) saved", timeout=SLOW_S)
        pngs = sorted(out.glob("*.png"))
        assert len(pngs) == 1 and read_metadata(pngs[0])["params"]["seed"] == 42
        term.wait_for("▀", timeout=30)  # the half-cell image region is drawn
        term.keys("C-q")  # the worker is running: the app asks first
        notice = term.wait_for("Quit sdtui?", timeout=30)
        assert f"{deployment_name} (local) is running" in notice
        term.keys("l")  # leave it running
        deadline = time.monotonic() + 30
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), "ctrl+q did not quit the app"
        assert [c.status for c in labelled(docker_client, deployment_name)] == ["running"]
    finally:
        term.kill()
