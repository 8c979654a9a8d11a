"""The app remembers: one default deployment shared with `--no-ui`, every form value and Lock
seed across restarts and teardowns; its fix lines name form fields; a cancel clears the
screen."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from textual.widgets import Checkbox, Input, TextArea

from sdtui.container.build import BASE_IMAGE_FIX
from sdtui.deploy.settings import open_deployment
from sdtui.errors import BuildFailed
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services
from sdtui.ui.forms import from_form
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.teardown import TeardownModal

from .conftest import quiet_checks
from .fakes import FakeDeployment
from .test_flows import SIZE, generate, make_app, provision, steps_ended, text_of, until

pytestmark = pytest.mark.asyncio


async def test_a_deployment_used_in_the_app_is_the_default_for_no_ui(worker, tiny_model,
                                                                     isolated_dirs) -> None:
    app = make_app(FakeDeployment(worker, name="from-app"), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await provision(app, pilot)
    done = subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--status", "--json"],
                          capture_output=True, text=True, timeout=120)
    first = json.loads(done.stdout.splitlines()[0])
    assert first == {"event": "deployment", "name": "from-app", "option": "local",
                     "chosen_by": "default"}


async def test_a_deployment_that_created_nothing_does_not_become_the_default(tiny_model,
                                                                          isolated_dirs) -> None:
    failing = FakeDeployment(None, name="never-made", failure=BuildFailed(
        "image build failed: base image 'nope:1' could not be pulled", fix=BASE_IMAGE_FIX))
    app = make_app(failing, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: steps_ended(app) and app.screen.failed)
    done = subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--status", "--json"],
                          capture_output=True, text=True, timeout=120)
    first = json.loads(done.stdout.splitlines()[0])
    assert first["name"].startswith("local-") and first["chosen_by"] == "first"


async def test_the_form_and_lock_seed_survive_a_restart(worker, tiny_model,
                                                        isolated_dirs) -> None:
    deployment = FakeDeployment(worker)
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        screen.query_one("#lock-seed", Checkbox).value = True
        screen.query_one("#seed", Input).value = "4242"
        screen.query_one("#cfg", Input).value = "5.5"
        screen.query_one("#negative_prompt", Input).value = "blurry"
        await generate(app, pilot, "remembered")
    app = make_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        assert screen.query_one("#lock-seed", Checkbox).value
        assert screen.query_one("#seed", Input).value == "4242"
        assert screen.query_one("#prompt", TextArea).text == "remembered"
        values = {n: screen.query_one(f"#{n}", Input).value for n in ("cfg", "negative_prompt",
                                                                        "steps", "width")}
        assert values == {"cfg": "5.5", "negative_prompt": "blurry", "steps": "4",
                          "width": "64"}


async def test_the_deployment_form_survives_a_teardown(worker, tiny_model,
                                                       isolated_dirs) -> None:
    def make_deployment(option: Any, values: dict[str, Any]) -> FakeDeployment:
        """The core resolves the form for real; only the provisioning is faked."""
        _, real = open_deployment(from_form(option, values), for_use=True)
        return FakeDeployment(worker, name=real.name, settings=real.settings)

    def app_() -> SdtuiApp:
        return SdtuiApp(Services(make_deployment=make_deployment, live_checks=quiet_checks,
                                 out_dir=isolated_dirs / "outputs"))

    app = app_()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        for name, value in (("name", "box2"), ("models", str(tiny_model)),
                            ("volume", "vol-2"), ("base_image", "base:2")):
            screen.query_one(f"#local-{name}", Input).value = value
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal))
        await pilot.click("#confirm")
        await until(pilot, lambda: steps_ended(app, "teardown"))
    app = app_()  # after a teardown and a restart
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        values = app.screen.values("local")
        assert (values["name"], values["volume"], values["base_image"], values["models"]) == (
            "box2", "vol-2", "base:2", str(tiny_model))


async def test_fix_lines_in_the_app_name_the_form_field(isolated_dirs, tiny_model) -> None:
    failing = FakeDeployment(None, failure=BuildFailed(
        "image build failed at Step 2/15 : FROM ${BASE_IMAGE}: base image 'nope:1' is not "
        "available locally and could not be pulled", fix=BASE_IMAGE_FIX))
    app = make_app(failing, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: steps_ended(app))
        error = text_of(app, "#error")
        assert "fix: pull it (docker pull IMAGE) or enter “Base image” with an image" in error
        assert "--base-image" not in error and "scripts/" not in error
        await pilot.press("ctrl+b")
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        app.screen.query_one("#local-name", Input).value = "Bad Name"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "invalid deployment name" in text_of(app, "#local-name-error"))


async def test_a_cancel_leaves_no_stale_preview_or_caption(worker, tiny_model,
                                                           isolated_dirs) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        gallery = await generate(app, pilot, "finished first")
        before = gallery.images[0].path
        assert str(before) in text_of(app, "#saved-path")
        screen.query_one("#steps", Input).value = "150"
        await pilot.press("ctrl+g")
        image = screen.query_one("#image")
        await until(pilot, lambda: image.image is not None and image.image != before)  # preview
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating)
        assert image.image is None  # no partial preview left on screen
        caption = text_of(app, "#saved-path")
        assert str(before) not in caption and "nothing saved" in caption
        assert "cancelled: 0 image(s) saved" in str(screen.query_one("#gen-status").render())
