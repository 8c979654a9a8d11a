"""Help where you look: F1 or ? lists every key of the screen and explains every field; fields
have tooltips; the palette shows each command's key; checks tell warnings from failures; the
Option A form says what a launch costs and how long it takes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import Checkbox, Input, Select

from sdtui.deploy.aws.estimate import cold_start_text
from sdtui.ui import checks
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services
from sdtui.ui.forms import FIELDS as FORM_FIELDS
from sdtui.ui.keys import acting_bindings
from sdtui.ui.prompt_form import FIELDS as PROMPT_FIELDS
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.help import HelpScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen
from sdtui.ui.screens.run import RunScreen
from sdtui.ui.widgets.gallery import Gallery

from .conftest import fake_services, given
from .fakes import FakeBatchDeployment, FakeDeployment, IdleWorker
from .test_flows import SIZE, text_of, until


def table_text(app: SdtuiApp, selector: str) -> str:
    """A Static that shows a rich Table, as plain text."""
    import io

    from rich.console import Console

    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(app.screen.query_one(selector).content)
    return console.export_text()


async def open_screen(name: str, app: SdtuiApp, pilot) -> None:  # noqa: ANN001
    if name == "prompt":
        app.open_prompt(FakeDeployment(None, name="help"), IdleWorker())  # type: ignore
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
    elif name == "provision":
        hold = threading.Event()
        app.start_provision(FakeDeployment(None, name="help", hold=hold))
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        app.call_later(hold.set)
    elif name == "run":  # a scale-out run that goes on until the test ends
        deployment = FakeBatchDeployment(gate=threading.Semaphore(0))
        app.open_run(deployment, lines=[{"prompt": "a fox", "seed": 1, "count": 1}])
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
    await pilot.pause()


@pytest.mark.parametrize("name, screen_cls, widgets", [
    ("deploy", DeployScreen, ()),
    ("provision", ProvisionScreen, ()),
    ("prompt", PromptScreen, (Gallery,)),
    ("run", RunScreen, (Gallery,)),
])
@pytest.mark.asyncio
async def test_help_lists_every_binding_of_its_screen(isolated_dirs, name, screen_cls,
                                                      widgets) -> None:
    app = SdtuiApp(fake_services(FakeDeployment(None), isolated_dirs / "outputs"))
    async with app.run_test(size=(140, 60)) as pilot:
        await open_screen(name, app, pilot)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        listed = table_text(app, "#help-keys")
        screen = app.screen.target
        for cls in (screen_cls, *widgets, SdtuiApp):
            bindings = Binding.make_bindings(cls.BINDINGS)
            if cls in widgets:  # a widget's keys that run an action this screen has
                bindings = acting_bindings(screen.query_one(cls), screen)
            for binding in bindings:
                if binding.system or (cls is SdtuiApp and app.check_action(binding.action, ())
                                      is False):
                    continue  # the app's keys are listed as they act now
                key = app.get_key_display(binding)
                text = binding.tooltip or binding.description
                assert any(line.split()[:1] == [key] and text in " ".join(listed.split())
                           for line in listed.splitlines()), (cls, binding)
        expected = {"deploy": [f.label for f in FORM_FIELDS["local"]],
                    "provision": [],
                    "prompt": [f.label for f in PROMPT_FIELDS.values()], "run": []}[name]
        if expected:
            fields = table_text(app, "#help-fields")
            for label in expected:
                assert label in fields, label
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, screen_cls))


@pytest.mark.asyncio
async def test_question_mark_opens_help_but_types_in_a_text_field(isolated_dirs) -> None:
    app = SdtuiApp(fake_services(FakeDeployment(None), isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")  # the option list has the focus
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        name = app.screen.query_one("#local-name", Input)
        name.focus()
        await pilot.press("question_mark")
        assert name.value.endswith("?") and isinstance(app.screen, DeployScreen)


@pytest.mark.asyncio
async def test_every_field_has_a_tooltip(isolated_dirs) -> None:
    app = SdtuiApp(fake_services(FakeDeployment(None), isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        screen.choose("aws")
        screen.choose("batch")
        await pilot.pause()
        for option, fields in FORM_FIELDS.items():
            for f in fields:
                assert screen.query_one(f"#{option}-{f.name}").tooltip == f.help != ""
        await open_screen("prompt", app, pilot)
        for f in PROMPT_FIELDS.values():
            assert app.screen.query_one(f"#{f.name}").tooltip == f.help != ""
        assert app.screen.query_one("#lock-seed", Checkbox).tooltip


@pytest.mark.asyncio
async def test_the_palette_shows_each_commands_key(isolated_dirs) -> None:
    app = SdtuiApp(fake_services(FakeDeployment(None), isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Provision"].startswith("^s · ")
        await open_screen("prompt", app, pilot)
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Generate"].startswith("^g · ")
        assert commands["Re-run with the same seed"].startswith("r · ")
        assert commands["Delete the selected image"].startswith("d · ")


@pytest.mark.asyncio
async def test_checks_tell_a_warning_from_a_failure(isolated_dirs, monkeypatch) -> None:
    monkeypatch.setattr(checks, "_docker", lambda values: [
        checks.Check("Docker engine reachable", "ok", "Docker 27.0"),
        checks.Check("GPU runtime", "warn", "none: the worker runs on the CPU, slow")])
    app = SdtuiApp(Services(out_dir=isolated_dirs / "outputs",
                            given=given(models=str(isolated_dirs / "missing.ckpt"))))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "GPU runtime" in text_of(app, "#checks"))
        shown = text_of(app, "#checks")
        assert "! GPU runtime" in shown and "✗ GPU" not in shown
        assert "✓ Docker engine reachable" in shown and "✗ Model files readable" in shown


@pytest.mark.docker
def test_a_cpu_only_engine_is_a_warning_that_says_images_will_be_slow(docker_client) -> None:
    from sdtui.container.docker_engine import has_nvidia_runtime

    found = {c.name: c for c in checks.live_checks("local", {"models": ""})}
    runtime = found["GPU runtime"]
    if has_nvidia_runtime(docker_client):
        assert runtime.state == "ok"
    else:
        assert runtime.state == "warn" and "CPU" in runtime.detail and "minutes" in runtime.detail
    assert found["Docker engine reachable"].state == "ok"


def test_aws_checks_give_the_provisioning_screens_fix_line(isolated_dirs, monkeypatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(isolated_dirs / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated_dirs / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (identity,) = [c for c in checks.live_checks("aws", {"models": ""})
                   if c.name == "AWS identity found"]
    assert identity.state == "fail"
    assert "no AWS credentials found" in identity.detail
    assert "— run `aws configure" in identity.detail and "then retry" in identity.detail
    assert "NoCredentialsError" not in identity.detail


@pytest.mark.asyncio
async def test_the_option_a_form_says_price_cold_start_and_idle_stop(isolated_dirs) -> None:
    app = SdtuiApp(fake_services(FakeDeployment(None), isolated_dirs / "outputs",
                                 option="aws"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "cold start" in text_of(app, "#aws-estimate"))
        line = text_of(app, "#aws-estimate")
        assert "g4dn.xlarge on-demand $0.526/h" in line
        # the README's figures, from the one table (estimate.COLD_START)
        assert (f"cold start ≈ {cold_start_text()} (a relaunch {cold_start_text('relaunch')}, "
                f"a restart {cold_start_text('restart')})") in line
        assert "idle auto-stop after 30 min" in line
        screen = app.screen
        screen.query_one("#aws-instance_type", Input).value = "g5.xlarge"
        screen.query_one("#aws-idle_minutes", Input).value = "10"
        await until(pilot, lambda: "g5.xlarge" in text_of(app, "#aws-estimate"))
        line = text_of(app, "#aws-estimate")
        assert "$1.006/h" in line and "idle auto-stop after 10 min" in line
        await pilot.click("#aws-spot")
        await until(pilot, lambda: "spot ≤ $1.006/h" in text_of(app, "#aws-estimate"))


def test_select_fields_are_selects() -> None:
    for f in PROMPT_FIELDS.values():
        if f.kind == "select":
            assert f.choices, f.name
    assert Select  # the prompt panel builds these from PROMPT_FIELDS


def test_a_fields_help_is_one_line(tmp_path: Path) -> None:
    for f in [*PROMPT_FIELDS.values(), *[f for fs in FORM_FIELDS.values() for f in fs]]:
        assert f.help and "\n" not in f.help and len(f.help) < 200, f.name
