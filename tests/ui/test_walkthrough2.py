"""The app's second walkthrough (issue 21): what a new user met, each driven as they met it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from sdtui import recent
from sdtui.ledger import Ledger
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services, make_deployment
from sdtui.ui.screens.deploy import DeployScreen

from .conftest import quiet_checks
from .fakes import FakeDeployment
from .test_flows import SIZE, until

pytestmark = pytest.mark.asyncio


def recording_services(outputs: Path, made: list[Any], checked: list[dict[str, Any]]
                       ) -> Services:
    """The real core resolves the form; the deployment it made is kept, a fake one provisions."""

    def make(option: Any, values: dict[str, Any]) -> FakeDeployment:
        made.append(make_deployment(option, values))
        return FakeDeployment(None, name="made")

    def checks(option: str, values: dict[str, Any]) -> list[Any]:
        checked.append(dict(values))
        return quiet_checks(option, values)

    return Services(make_deployment=make, live_checks=checks, out_dir=outputs)


async def test_a_cleared_field_means_the_default_for_checks_and_provision(
        isolated_dirs, tiny_model) -> None:
    ledger = Ledger.open("local", "local")
    ledger.set_params(models=[str(tiny_model)], docker_host="tcp://127.0.0.1:9",
                      volume="old-volume")
    recent.use_deployment("local", "local")
    made: list[Any] = []
    checked: list[dict[str, Any]] = []
    app = SdtuiApp(recording_services(isolated_dirs / "outputs", made, checked))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen) and bool(checked))
        host = app.screen.query_one("#local-docker_host", Input)
        assert host.value == "tcp://127.0.0.1:9"  # the ledger's, shown
        host.value = ""
        app.screen.query_one("#local-volume", Input).value = ""
        checked.clear()
        await until(pilot, lambda: bool(checked))
        assert checked[-1]["docker_host"] == ""  # the checks try the default engine
        assert checked[-1]["volume"] == "sdtui-models"
        app.screen.query_one("#local-models", Input).focus()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: bool(made))
    settings = made[0].settings
    assert settings.docker_host is None  # DOCKER_HOST or the context, as the checks used
    assert settings.volume == "sdtui-models"
