"""What every screen looks like at 80×24, 140×45 and 220×60, with the half-cell image renderer
forced (SDTUI_IMAGE_PROTOCOL, set by the isolated_dirs fixture) and the clock stopped."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdtui.deploy import base, settings
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services
from sdtui.ui.screens import provision

from .conftest import given, quiet_checks
from .fakes import FakeAwsDeployment, FakeBatchDeployment, FakeDeployment, IdleWorker

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((140, 45), id="140x45"),
         pytest.param((220, 60), id="220x60")]
Steps = Callable[[Any, SdtuiApp], Awaitable[None]]


class _StoppedClock:
    @staticmethod
    def monotonic() -> float:
        return 1000.0


HOLDS: list[threading.Event] = []


@pytest.fixture(autouse=True)
def stopped_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(provision, "time", _StoppedClock)
    monkeypatch.setattr(base, "time", _StoppedClock)
    # Default names carry the state dir's id, and each test's state dir is another tmp dir.
    monkeypatch.setattr(settings, "state_dir_id", lambda: "3f9a2c")
    yield
    for hold in HOLDS:  # let the held provisioning threads finish
        hold.set()


def make_app(option: str = "local") -> SdtuiApp:
    return SdtuiApp(Services(
        live_checks=quiet_checks, list_deployments=lambda: [], out_dir=Path("/outputs"),
        given=given(option=option, models="/models/sd-v1-4.ckpt", bucket="my-sd-models")))


async def checked(pilot: Any, app: SdtuiApp) -> None:
    """The checks run in a thread: wait for their result."""
    for _ in range(400):
        if "Model files" in str(app.screen.query_one("#checks").render()):
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def prompt_with_an_image(pilot: Any, app: SdtuiApp) -> None:
    await checked(pilot, app)
    app.open_prompt(FakeDeployment(None, name="snap"), IdleWorker())  # type: ignore[arg-type]
    await pilot.pause()
    screen = app.screen
    screen.query_one("#seed").value = "1234567890"
    screen.query_one("#prompt").text = "a lighthouse at dusk, oil on canvas"
    screen.show_image(Image.linear_gradient("L").resize((64, 64)).convert("RGB"))
    await pilot.pause()


async def provisioning(pilot: Any, app: SdtuiApp) -> None:
    await checked(pilot, app)
    hold = threading.Event()  # the upload waits: a step running, the next ones pending
    HOLDS.append(hold)
    app.start_provision(FakeAwsDeployment(None, hold=hold))
    def settled() -> bool:  # the upload's progress and log line shown, the log at its end
        screen = app.screen
        if not (screen.query("#progress-row") and screen.query_one("#progress-row").display):
            return False
        log = screen.query_one("#log")
        return (any("uploading" in str(line.text) for line in log.lines)
                and log.scroll_y >= log.max_scroll_y)

    for _ in range(400):
        if settled():
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def teardown_modal(pilot: Any, app: SdtuiApp) -> None:
    from sdtui.ui.screens.teardown import TeardownModal

    await checked(pilot, app)
    app.push_screen(TeardownModal(FakeAwsDeployment(None).status(), Path("/outputs")))
    await pilot.pause()


async def quit_modal(pilot: Any, app: SdtuiApp) -> None:
    from sdtui.ui.screens.quit import QuitModal

    await checked(pilot, app)
    app.push_screen(QuitModal(FakeAwsDeployment(None), "running",
                              "$0.526/h · $0.50 so far · idle auto-stop in 12:00", True))
    await pilot.pause()


async def scale_out_run(pilot: Any, app: SdtuiApp) -> None:
    """A run submitted, its instances not started yet (the fake's shards wait on a gate)."""
    await checked(pilot, app)
    gate = threading.Semaphore(0)
    deployment = FakeBatchDeployment(gate=gate)
    HOLDS.append(deployment.cancelled)  # the shards' wait ends with the test
    app.open_run(deployment, lines=[{"prompt": f"prompt {i}", "seed": i, "count": 1}
                                    for i in range(3)])
    for _ in range(400):
        summary = app.screen.query("#run-summary")
        if summary and "waiting for the instances" in str(summary.first().render()):
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def help_of_the_prompt_panel(pilot: Any, app: SdtuiApp) -> None:
    await prompt_with_an_image(pilot, app)
    await pilot.press("f1")
    await pilot.pause()


SCREENS: dict[str, tuple[str, Steps]] = {
    "deploy_local": ("local", checked),
    "deploy_aws": ("aws", checked),
    "deploy_batch": ("batch", checked),
    "provision": ("aws", provisioning),
    "prompt": ("local", prompt_with_an_image),
    "run": ("batch", scale_out_run),
    "teardown": ("aws", teardown_modal),
    "quit": ("aws", quit_modal),
    "help": ("local", help_of_the_prompt_panel),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, isolated_dirs, screen: str, size: tuple[int, int]) -> None:
    option, steps = SCREENS[screen]
    app = make_app(option)

    async def run_before(pilot: Any) -> None:
        await steps(pilot, app)

    assert snap_compare(app, run_before=run_before, terminal_size=size)
