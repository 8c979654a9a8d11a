"""Quitting says what it leaves running and what that costs, and never hangs: quitting in the
middle of a long generation returns to the shell without waiting for it (in a real terminal)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

from sdtui.outputs import read_index
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.quit import QuitModal

from .fakes import FakeAwsDeployment, FakeDeployment
from .terminal import Tmux
from .test_flows import SIZE, make_app, text_of, until

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.asyncio
async def test_quit_with_a_cloud_deployment_says_what_it_costs_then_leaves_it(
        worker, tiny_model, isolated_dirs) -> None:
    deployment = FakeAwsDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model, option="aws", bucket="my-sd-models")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, QuitModal))
        notice = text_of(app, "#quit-notice")
        assert "cloud (aws) is running" in notice and "$0.526/h" in notice
        assert "idle auto-stop" in notice
        await pilot.press("escape")  # stay
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, QuitModal))
        await pilot.press("l")  # leave it running
        await until(pilot, lambda: not app.is_running)
    assert deployment.teardowns == []


@pytest.mark.asyncio
async def test_quit_then_tear_down_now_tears_down_and_leaves(worker, tiny_model,
                                                             isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, QuitModal))
        assert "fake (local) is running" in text_of(app, "#quit-notice")
        await pilot.press("t")
        await until(pilot, lambda: not app.is_running)
    assert deployment.teardowns == [False]  # the models are kept


@pytest.mark.asyncio
async def test_nothing_running_quits_at_once_and_the_status_bar_shows_the_real_state(
        worker, tiny_model, isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        assert "worker: none" in str(app.screen.query_one("StatusBar").render())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+b")  # detached: the container runs on
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        bar = str(app.screen.query_one("StatusBar").render())
        assert "deployment: fake (local)" in bar and "worker: running" in bar
    # A restart finds the default deployment running, and says so before anything is done.
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "worker: running" in str(
            app.screen.query_one("StatusBar").render()))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, QuitModal))
        assert "fake (local) is running" in text_of(app, "#quit-notice")
    # With nothing running, ctrl+q quits at once.
    deployment.ledger.delete()
    empty = FakeDeployment(None, name="idle")
    empty.ledger.delete()
    app = make_app(empty, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running)


@pytest.mark.slow
def test_quitting_mid_generation_returns_to_the_shell_without_waiting_for_it(
        tiny_model, isolated_dirs, capsys) -> None:
    out = isolated_dirs / "outputs"
    generate = {"prompt": "a long batch", "steps": 150, "count": 16, "width": 64, "height": 64}
    env = {k: os.environ[k] for k in ("SDTUI_STATE_DIR", "SDTUI_CONFIG_DIR",
                                      "SDTUI_OUTPUTS_DIR")}
    env |= {"SDTUI_IMAGE_PROTOCOL": "halfcell", "TERM": "xterm-256color",
            "PYTHONPATH": str(REPO)}
    app = shlex.join([sys.executable, "-m", "tests.ui.app_harness", str(tiny_model), str(out),
                      json.dumps(generate)])
    command = ("env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
               + f" {app}; echo SDTUI-EXITED-$?; exec sleep 600")
    term = Tmux("quit", size=(140, 45))
    term.start(f"cd {shlex.quote(str(REPO))} && {command}")
    try:
        term.wait_for("Provision", timeout=60)
        term.keys("C-s")
        term.wait_for("Generate", timeout=120)
        term.wait_for("worker: ready", timeout=60)
        term.keys("C-g")
        term.wait_for("step 2/150", timeout=120, poll=0.05)  # an early step of a long batch
        term.keys("C-q")
        # What happens to the running request: waited for, as the dialog may be half drawn.
        notice = term.wait_for("goes on in the worker", timeout=60, poll=0.05)
        assert "Quit sdtui?" in notice
        pressed = time.monotonic()
        term.keys("l")
        # Bounded, not timed: a loaded machine takes its time, but the batch takes far longer.
        term.wait_for("SDTUI-EXITED-0", timeout=60, poll=0.02)
        # Only a running app saves images: one that waited for the batch would have all 16.
        assert len(read_index(out)) < generate["count"]
        with capsys.disabled():
            print(f"\n  quit mid-generation: shell back {time.monotonic() - pressed:.2f} s "
                  f"after 'leave running'")
    finally:
        term.kill()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((out / "worker.pid").read_text()), signal.SIGKILL)
