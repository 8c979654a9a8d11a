"""Option B's form after the model file is deleted on this machine: the deployment's ledger
records giving that very path to the worker container it created, so the field says the
volume's copy serves and Provision goes on, as `--no-ui` does (the same core rule). A path no
deployment recorded is still marked ✗."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Input

from sdtui.deploy.local import LocalDeployment
from sdtui.ledger import Ledger
from sdtui.ui.app import SdtuiApp
from sdtui.ui.checks import Check, model_check
from sdtui.ui.core import Services, make_deployment
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.provision import ProvisionScreen

from .conftest import given
from .fakes import FakeDeployment
from .test_flows import SIZE, text_of, until

pytestmark = pytest.mark.asyncio


async def test_the_form_lets_a_deleted_model_go_when_the_volume_keeps_it(
        isolated_dirs) -> None:
    model = isolated_dirs / "model.safetensors"
    model.write_bytes(b"gone before this run")
    ledger = Ledger.open("gone", "local")  # as provisioning left it
    ledger.set_params(models=[str(model)])
    ledger.record("container", "sdtui-gone-worker")
    model.unlink()
    made: list[Any] = []

    def make(option: Any, values: dict[str, Any]) -> FakeDeployment:
        made.append(make_deployment(option, values))  # the core's own validation
        return FakeDeployment(None, name="gone")

    def checks(option: str, values: dict[str, Any]) -> list[Check]:
        return [Check("Docker engine reachable", "ok", "Docker (fake)"),
                model_check(option, values)]

    app = SdtuiApp(Services(make_deployment=make, live_checks=checks,
                            out_dir=isolated_dirs / "outputs",
                            given=given(option="local", name="gone",
                                        models=str(isolated_dirs / "as-started.ckpt"))))
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, DeployScreen)
        field = app.screen.query_one("#local-models", Input)
        field.value = str(isolated_dirs / "never-there.ckpt")  # no deployment recorded it
        await until(pilot, lambda: "does not exist" in text_of(app, "#local-models-error"))
        assert field.has_class("-invalid")

        field.value = str(model)
        note = f"! {model} is gone from this machine, the volume's copy serves"
        await until(pilot, lambda: text_of(app, "#local-models-error") == note)
        assert not field.has_class("-invalid")
        await until(pilot, lambda: "! Model files readable" in text_of(app, "#checks")
                    and "the volume's copy serves" in text_of(app, "#checks"))

        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        (deployment,) = made
        assert isinstance(deployment, LocalDeployment)
        assert deployment.settings.models[0] == model
