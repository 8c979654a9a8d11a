"""The prompt form fits the loaded model's family, as the worker's `ready` describes it: FLUX.1
[dev] shows Distilled CFG (the request's `guidance`) in place of cfg, the distilled families
(FLUX.1, FLUX.2 [klein], SD 3.5 Large Turbo) have no negative prompt, the steps field says the
model's own, the sampler lists only what the family runs, and Generate never sends what the
family refuses (the same check the session makes before sending: `protocol.model_refusal`).
F1 says what each family takes and where it runs."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select

from sdtui import protocol, recent
from sdtui.ui.app import SdtuiApp
from sdtui.ui.prompt_form import FAMILY_HELP, family_view
from sdtui.ui.screens.help import HelpScreen
from sdtui.ui.screens.prompt import PromptScreen

from .conftest import fake_services
from .fakes import FakeDeployment, IdleWorker
from .test_flows import SIZE, until
from .test_help import table_text

# `ready` as the worker sends it for each family (sdtui/worker/families/*.py).
FLUX_DEV = {"family": "flux1", "family_label": "FLUX.1", "guidance": "embedded",
            "default_steps": 28, "sampling": "flow", "size_multiple": 16}
FLUX_SCHNELL = {**FLUX_DEV, "guidance": "none", "default_steps": 4}
SD3_TURBO = {"family": "sd3", "family_label": "SD 3.5", "guidance": "none",
             "default_steps": 4, "sampling": "flow", "size_multiple": 16}
SD3_LARGE = {**SD3_TURBO, "guidance": "cfg", "default_steps": 28}
SD1 = {"family": "sd1", "family_label": "SD 1.x", "guidance": "cfg", "sampling": "diffusion"}
# What the user keeps in config.toml: a sampler FLUX.1 does not run, and guidance that only
# FLUX.1 [dev] takes; and what the form last had, for a Stable Diffusion model.
CONFIG = '[generate]\nscheduler = "dpmpp_2m"\nguidance = 4.0\n'
LAST_FORM = {"negative_prompt": "blurry", "schedule": "karras"}


def with_config_and_last_form(dirs) -> SdtuiApp:  # noqa: ANN001
    (dirs / "config" / "config.toml").write_text(CONFIG)
    recent.remember_generate(LAST_FORM)
    return SdtuiApp(fake_services(FakeDeployment(None), dirs / "outputs"))


class ReadyWorker(IdleWorker):
    def __init__(self, ready: dict) -> None:
        self.ready = ready


@pytest.mark.parametrize("ready, hidden", [
    (FLUX_DEV, {"cfg", "negative_prompt"}),
    (FLUX_SCHNELL, {"cfg", "guidance", "negative_prompt"}),
    (SD3_TURBO, {"cfg", "guidance", "negative_prompt"}),
    (SD3_LARGE, {"guidance"}),
    (SD1, {"guidance"}),
    (None, {"guidance"}),  # a worker that has not said: every Stable Diffusion field
])
def test_each_family_leaves_out_what_it_does_not_take(ready, hidden):
    assert family_view(ready).hidden == hidden


@pytest.mark.asyncio
async def test_flux_dev_shows_distilled_cfg_not_cfg_and_sends_only_what_it_takes(
        isolated_dirs) -> None:
    app = with_config_and_last_form(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        app.open_prompt(FakeDeployment(None, name="flux"), ReadyWorker(FLUX_DEV))  # type: ignore
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        screen: PromptScreen = app.screen  # type: ignore[assignment]
        shown = {name: screen.query_one(f"#{name}").display and screen.query_one(
            f"#{name}").region.height > 0 for name in ("cfg", "guidance", "negative_prompt")}
        assert shown == {"cfg": False, "guidance": True, "negative_prompt": False}
        assert "FLUX.1: Distilled CFG in place of cfg, no negative prompt, Euler only" in str(
            screen.query_one("#family-note").render())
        assert screen.query_one("#steps", Input).placeholder == "model's (28)"
        sampler = screen.query_one("#scheduler", Select)
        assert [value for _, value in sampler._options] == ["model's", "euler"]
        assert [label for label, _ in screen.query_one("#schedule", Select)._options] == [
            "Uniform", "Simple"]

        screen.query_one("#prompt").text = "a lighthouse at dusk"
        screen.query_one("#guidance", Input).value = "2.5"
        settings, params = screen.read_request()  # what Generate sends
        assert (params["guidance"], params["negative_prompt"]) == (2.5, "")
        assert (params["scheduler"], params["schedule"]) == (None, "default")
        assert protocol.model_refusal(FLUX_DEV, params) is None
        # The left-out negative prompt is kept for the next Stable Diffusion model.
        screen._remember(settings)
        assert recent.load().generate["negative_prompt"] == "blurry"

        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        families = table_text(app, "#help-families")
        assert families.startswith("This model") and "FLUX.1: Distilled CFG in place of " \
            "cfg" in families.splitlines()[0]
        for label, _ in FAMILY_HELP:
            assert label in families
        assert "g5, g6 or g6e" in families


@pytest.mark.asyncio
async def test_a_stable_diffusion_model_keeps_cfg_and_never_gets_guidance(isolated_dirs) -> None:
    app = with_config_and_last_form(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        app.open_prompt(FakeDeployment(None, name="sd1"), ReadyWorker(SD1))  # type: ignore
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        screen: PromptScreen = app.screen  # type: ignore[assignment]
        assert screen.query_one("#cfg").display and not screen.query_one("#guidance").display
        assert not screen.query_one("#family-note").display
        screen.query_one("#prompt").text = "a lighthouse at dusk"
        _, params = screen.read_request()
        assert params["negative_prompt"] == "blurry" and params["guidance"] is None
        assert params["scheduler"] == "dpmpp_2m"
        assert protocol.model_refusal(SD1, params) is None
