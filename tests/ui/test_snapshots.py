"""What the screens look like, with the half-cell image renderer forced (SDTUI_IMAGE_PROTOCOL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services

from .conftest import given, quiet_checks
from .fakes import FakeDeployment

SIZE = (120, 40)


def _services(outputs: Path) -> Services:
    return Services(live_checks=quiet_checks, list_deployments=lambda: [], out_dir=outputs,
                    given=given(models="/models/sd-v1-4.ckpt"))


class _IdleWorker:
    """Only what the prompt panel asks of a worker before the first generation."""

    closed = False

    def fetch(self) -> list[dict[str, Any]]:
        return []


def test_deployment_screen(snap_compare, isolated_dirs) -> None:
    app = SdtuiApp(_services(isolated_dirs / "outputs"))

    async def checked(pilot) -> None:  # the checks run in a thread: wait for their result
        for _ in range(200):
            if "Docker engine" in str(app.screen.query_one("#checks").render()):
                break
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(app, run_before=checked, terminal_size=SIZE)


def test_prompt_panel_with_an_image(snap_compare, isolated_dirs) -> None:
    app = SdtuiApp(_services(Path("/outputs")))
    gradient = Image.linear_gradient("L").resize((64, 64)).convert("RGB")

    async def show(pilot) -> None:
        app.open_prompt(FakeDeployment(None, name="snap"), _IdleWorker())  # type: ignore[arg-type]
        await pilot.pause()
        screen = app.screen
        screen.query_one("#seed").value = "1234"
        screen.show_image(gradient)
        await pilot.pause()

    assert snap_compare(app, run_before=show, terminal_size=SIZE)
