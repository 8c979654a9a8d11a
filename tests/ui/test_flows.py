"""Every flow of the app, driven with the Pilot, against a fake deployment and a real worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, Static, TextArea

from sdtui.client import WorkerClient
from sdtui.deploy.base import DeploymentStatus
from sdtui.deploy.worker_container import RESTART_FIX
from sdtui.errors import WorkerDied
from sdtui.outputs import read_metadata
from sdtui.ui.app import SdtuiApp
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen
from sdtui.ui.screens.teardown import TeardownModal
from sdtui.ui.widgets.gallery import Gallery
from sdtui.ui.widgets.steps import StepRow

from .conftest import fake_services, given
from .fakes import FakeDeployment
from .worker_relay import SubprocessWorker

pytestmark = pytest.mark.asyncio
SIZE = (140, 45)


async def until(pilot: object, condition: Callable[[], bool], timeout: float = 60,
                state: Callable[[], object] | None = None) -> None:
    """Let the app run until condition holds (a worker thread is doing the work); on a timeout,
    say what `state` shows then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            shown = f"; then: {state()}" if state is not None else ""
            raise AssertionError(f"timed out waiting for {condition}{shown}")
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]  # let a screen that just opened mount


async def type_ahead(app: SdtuiApp, pilot: object, *keys: str) -> None:
    """Keys as a fast typist's arrive: all queued before the app handles the first (Pilot.press
    waits for the app to go idle between keys, which hides what a key leaves for later)."""
    from textual import events

    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)  # type: ignore[union-attr]
    await pilot.pause()  # type: ignore[attr-defined]


def steps_ended(app: SdtuiApp, mode: str = "provision") -> bool:
    """The steps screen's run (provisioning or teardown) has ended. `not running` alone holds
    too for a screen pushed and not yet mounted, before its run starts (CI, 2026-12-07: a test
    looked for the volume while the teardown was still removing it)."""
    screen = app.screen
    return (isinstance(screen, ProvisionScreen) and screen.mode == mode
            and screen.finished_at is not None and not screen.running)


def text_of(app: SdtuiApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def make_app(deployment: FakeDeployment, dirs: Path, model: Path, **initial: object) -> SdtuiApp:
    return SdtuiApp(fake_services(deployment, dirs / "outputs", models=str(model), **initial))


async def provision(app: SdtuiApp, pilot: object) -> PromptScreen:
    await pilot.press("ctrl+s")  # type: ignore[attr-defined]
    await until(pilot, lambda: isinstance(app.screen, PromptScreen))
    return app.screen  # type: ignore[return-value]


async def generate(app: SdtuiApp, pilot: object, prompt: str, count_before: int = 0) -> Gallery:
    screen = app.screen
    screen.query_one("#prompt", TextArea).text = prompt
    for name, value in (("steps", "4"), ("width", "64"), ("height", "64")):
        screen.query_one(f"#{name}", Input).value = value
    await pilot.press("ctrl+g")  # type: ignore[attr-defined]
    gallery = screen.query_one("#gallery", Gallery)
    await until(pilot, lambda: len(gallery.images) > count_before and not screen.generating)
    return gallery


async def test_choose_provision_prompt_image(worker, tiny_model, isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, DeployScreen)
        screen = await provision(app, pilot)
        assert app.deployment_label == "fake (local)"
        gallery = await generate(app, pilot, "a lighthouse at dusk")
        image = gallery.images[0]
        assert image.path.is_file() and image.path.parent == isolated_dirs / "outputs"
        assert read_metadata(image.path)["params"]["prompt"] == "a lighthouse at dusk"
        assert str(image.path) in text_of(app, "#saved-path")
        assert screen.query_one("#image").image is not None
        assert "1 image(s) saved" in str(screen.query_one("#gen-status").render())


async def test_provisioning_screen_shows_steps_progress_and_log(tiny_model, isolated_dirs
                                                                 ) -> None:
    hold = threading.Event()
    deployment = FakeDeployment(None, hold=hold)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        screen = app.screen
        await until(pilot, lambda: screen.query_one("#progress-row").display)
        states = {row.step_name: row.state for row in screen.query(StepRow)}
        assert states == {"engine": "done", "volume": "done", "image": "skipped",
                          "models": "running", "container": "pending"}
        assert "MiB" in str(screen.query_one("#progress-label").render())
        assert "elapsed 0:0" in text_of(app, "#elapsed")
        lines = [str(line.text) for line in screen.query_one("#log").lines]
        assert any("uploading model.safetensors" in line for line in lines)
        assert app.worker_state == "provisioning"
        hold.set()
        await until(pilot, lambda: not screen.running)


async def test_escape_cancels_provisioning_and_retry_resumes(worker, tiny_model, isolated_dirs
                                                            ) -> None:
    hold = threading.Event()
    deployment = FakeDeployment(worker, hold=hold)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        screen = app.screen
        await until(pilot, lambda: screen.query_one("#step-models", StepRow).state == "running")
        await pilot.press("escape")
        await until(pilot, lambda: not screen.running)
        assert screen.query_one("#step-models", StepRow).state == "failed"
        assert "cancelled during models" in text_of(app, "#error")
        assert app.worker_state == "cancelled"
        assert deployment.provisioned == 0
        hold.set()
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        assert deployment.provisioned == 1


async def test_failure_shows_error_with_fix_then_retry(worker, tiny_model, isolated_dirs) -> None:
    deployment = FakeDeployment(worker, fail_once=True)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: steps_ended(app))
        error = text_of(app, "#error")
        assert "disk quota exceeded" in error and "fix: free some space, then retry" in error
        assert app.screen.query_one("#failure-actions").display
        await pilot.click("#retry")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))


async def test_cloud_cost_and_idle_countdown_show(worker, tiny_model, isolated_dirs) -> None:
    hold = threading.Event()
    deployment = FakeDeployment(worker, name="cloud", option="aws", hold=hold)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        screen = app.screen
        assert not screen.query_one("#cost").display
        hold.set()
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        assert app.cost_label.startswith("$0.526/h · $0.03 so far · idle auto-stop in 2")
        assert "$0.526/h" in str(app.screen.query_one("StatusBar").render())


async def test_bad_form_shows_errors_next_to_fields(tiny_model, isolated_dirs) -> None:
    deployment = FakeDeployment(None)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#local-models", Input).value = str(isolated_dirs / "missing.ckpt")
        screen.query_one("#local-name", Input).value = "Bad Name"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "does not exist" in text_of(app, "#local-models-error")
        assert "invalid deployment name" in text_of(app, "#local-name-error")
        assert isinstance(app.screen, DeployScreen)
        screen.query_one("#local-models", Input).value = str(tiny_model)
        await pilot.pause()
        assert text_of(app, "#local-models-error") == ""


async def test_live_checks_report_an_unreachable_engine(tiny_model, isolated_dirs) -> None:
    from sdtui.ui.core import Services

    app = SdtuiApp(Services(out_dir=isolated_dirs / "outputs", given=given(
        models=str(tiny_model), docker_host="unix:///nonexistent/docker.sock")))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "Docker engine" in text_of(app, "#checks"))
        checks = text_of(app, "#checks")
        assert "✗ Docker engine reachable" in checks and "cannot reach" in checks
        assert "✓ Model files readable" in checks
        app.screen.query_one("#local-models", Input).value = "/nope"
        await until(pilot, lambda: "✗ Model files readable" in text_of(app, "#checks"))


async def test_bad_parameters_are_shown_next_to_the_field(worker, tiny_model, isolated_dirs
                                                         ) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        screen.query_one("#prompt", TextArea).text = "a cat"
        screen.query_one("#steps", Input).value = "0"
        await pilot.press("ctrl+g")
        assert "steps must be from 1 to 150" in text_of(app, "#steps-error")
        screen.query_one("#steps", Input).value = "4"
        screen.query_one("#width", Input).value = "65"
        await pilot.press("ctrl+g")
        assert "multiple of 8" in text_of(app, "#width-error")
        screen.query_one("#width", Input).value = "64"
        screen.query_one("#prompt", TextArea).text = "   "
        await pilot.press("ctrl+g")
        assert "Prompt must not be empty" in text_of(app, "#prompt-error")
        assert not screen.generating


async def test_gallery_rerun_same_seed_copy_prompt_and_path(worker, tiny_model, isolated_dirs
                                                           ) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        gallery = await generate(app, pilot, "first prompt")
        first = gallery.images[0]
        await generate(app, pilot, "second prompt", count_before=1)
        assert gallery.images[1].seed != first.seed  # unlocked: a new seed each time
        await pilot.press("ctrl+l")
        await pilot.press("up")  # select the first image
        await pilot.press("c")
        assert screen.query_one("#prompt", TextArea).text == "first prompt"
        assert screen.query_one("#seed", Input).value == str(first.seed)
        await pilot.press("ctrl+l", "up")  # selecting a row shows that image and its parameters
        # The caption follows the highlighted row once the app has handled it (not at once
        # on a loaded machine).
        await until(pilot, lambda: str(first.path) in text_of(app, "#saved-path"))
        await pilot.press("ctrl+l", "up", "r")
        await until(pilot, lambda: len(gallery.images) == 3 and not screen.generating)
        again = gallery.images[2]
        assert again.seed == first.seed and again.params["prompt"] == "first prompt"
        assert again.path.read_bytes() != b"" and again.path != first.path


async def test_escape_cancels_a_generation_and_keys_are_answered(worker, tiny_model,
                                                                 isolated_dirs) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        prompt = screen.query_one("#prompt", TextArea)
        prompt.text = "slow"
        screen.query_one("#steps", Input).value = "150"
        screen.query_one("#count", Input).value = "3"
        for name in ("width", "height"):
            screen.query_one(f"#{name}", Input).value = "64"
        # The worker is held at its first step, so the generation outlasts the keys on any
        # machine; the cancel reaches it before it goes on.
        stopped = worker.stop_on_event("progress")
        try:
            await pilot.press("ctrl+g")
            await until(pilot, stopped.is_set)
            await until(pilot, lambda: "step" in str(screen.query_one("#gen-status").render()))
            prompt.focus()
            await pilot.press("end", "x", "y")
            assert prompt.text == "slowxy" and screen.generating  # typed while it samples
            await pilot.press("escape")
            await pilot.pause()
        finally:
            worker.resume()
        await until(pilot, lambda: not screen.generating)
        assert "cancelled" in str(screen.query_one("#gen-status").render())
        assert not screen.query_one("#gen-progress").display  # no bar left at the cancel's %
        assert app.worker_state == "ready"


async def test_teardown_modal_lists_deleted_and_kept_then_purges(worker, tiny_model,
                                                                 isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    deployment.ledger.record("container", "sdtui-fake")
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "ready" in str(
            app.screen.query_one("#deployments").get_row_at(0)))
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal))
        listing = text_of(app, "#teardown-list")
        deleted, kept = listing.split("Kept:")
        assert "container sdtui-fake" in deleted and "volume sdtui-models" in kept
        assert "your images in" in kept
        await pilot.click("#purge")
        assert "volume sdtui-models" in text_of(app, "#teardown-list").split("Kept:")[0]
        await pilot.click("#confirm")
        await until(pilot, lambda: steps_ended(app, "teardown"))
        assert deployment.teardowns == [True]
        assert "removed volume sdtui-models" in text_of(app, "#error")
        await pilot.press("ctrl+b")
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        assert "(none yet)" in str(app.screen.query_one("#deployments").get_row_at(0))


async def test_teardown_cancelled_keeps_everything(worker, tiny_model, isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await provision(app, pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal))
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen) and deployment.teardowns == []


async def test_resume_an_existing_deployment_remembers_the_form(worker, tiny_model,
                                                                isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await provision(app, pilot)
        await generate(app, pilot, "remember me")
        await pilot.press("ctrl+b")
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        table = app.screen.query_one("#deployments")
        assert table.get_row_at(0)[0] == "fake (default)"  # the last one used
        await pilot.press("ctrl+r")
        screen = await until(pilot, lambda: isinstance(app.screen, PromptScreen)) or app.screen
        assert screen.query_one("#prompt", TextArea).text == "remember me"
        assert screen.query_one("#steps", Input).value == "4"


async def test_command_palette_runs_screen_actions(worker, tiny_model, isolated_dirs) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        titles = {c.title for c in app.get_system_commands(screen)}
        assert {t for t, _, _ in PromptScreen.PALETTE} <= titles
        before = screen.query_one("#seed", Input).value
        await pilot.press("ctrl+p")
        await pilot.press(*"randomise seed")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: screen.query_one("#seed", Input).value != before)


async def test_existing_deployments_show_each_state_whole(tiny_model, isolated_dirs) -> None:
    """The state column grows with what the status says ("exited", not "exite")."""

    class Exited(FakeDeployment):
        def status(self) -> DeploymentStatus:
            return DeploymentStatus(self.name, "local", "exited")

    deployment = Exited(None, name="stopped-one")
    deployment.ledger.record("container", "sdtui-stopped-one-worker")
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#deployments")
        await until(pilot, lambda: "exited" in str(table.get_row_at(0)))
        shown = table.render_line(1).text  # the header, then the first row, as drawn
        assert "stopped-one" in shown and " exited " in shown, shown


async def test_a_killed_worker_says_how_to_resume_without_leaving(tiny_model, isolated_dirs,
                                                                   tmp_path) -> None:
    """The worker killed mid-image (its process SIGKILLed; the deployment says why, as Docker's
    diagnosis does): the app names its own keys for the recovery, not 'run sdtui again'."""
    own = SubprocessWorker(tiny_model, tmp_path / "worker.log")
    first = own.attach()
    first.wait_ready(timeout=120)
    first.close()

    class Diagnosed(FakeDeployment):
        def connect(self) -> WorkerClient:
            client = own.attach()
            client._diagnose = lambda: WorkerDied("the worker was killed (SIGKILL)",
                                                  fix=RESTART_FIX)
            return client

    app = make_app(Diagnosed(own), isolated_dirs, tiny_model)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await provision(app, pilot)
            screen.query_one("#prompt", TextArea).text = "slow"
            for name, value in (("steps", "150"), ("width", "64"), ("height", "64")):
                screen.query_one(f"#{name}", Input).value = value
            stopped = own.stop_on_event("progress")
            await pilot.press("ctrl+g")
            await until(pilot, stopped.is_set)
            own.proc.kill()
            await until(pilot, lambda: not screen.generating)
            status = str(screen.query_one("#gen-status").render())
            assert "the worker was killed" in status
            assert "ctrl+b, then Resume (ctrl+r)" in status and "sdtui again" not in status
    finally:
        own.stop()
