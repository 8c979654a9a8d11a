"""The app's second walkthrough (issue 21), the items left after the first round: default names
of their own, other clients on the deployment, kept volumes, the base image, the estimate
without an account, the catalogue picker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, OptionList

from sdtui import recent
from sdtui.deploy.base import run_steps
from sdtui.deploy.settings import open_deployment
from sdtui.fetch.catalogue import CATALOGUE, gating
from sdtui.ledger import Ledger
from sdtui.settings import Given
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.teardown import TeardownModal

from .conftest import quiet_checks
from .fakes import FakeBatchDeployment, FakeDeployment
from .test_batch import batch_app
from .test_fields import make, prompt_panel
from .test_flows import SIZE, make_app, provision, text_of, until
from .test_help import table_text
from .test_real_local import BASE
from .test_walkthrough2 import recording_services

# --- 2: default names that two state dirs on one engine never share ---------------------------


async def first_form(outputs: Path, model: Path) -> tuple[str, Any]:
    """The name a first start's form shows, and the settings Provision makes from it."""
    made: list[Any] = []
    checked: list[dict[str, Any]] = []
    app = SdtuiApp(recording_services(outputs, made, checked))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen) and bool(checked))
        name = app.screen.query_one("#local-name", Input).value
        app.screen.query_one("#local-models", Input).value = str(model)
        app.screen.query_one("#local-models", Input).focus()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: bool(made))
    return name, made[0].settings


@pytest.mark.asyncio
async def test_two_state_dirs_default_to_names_and_volumes_of_their_own(
        isolated_dirs, tiny_model, monkeypatch) -> None:
    """Two users of one engine, each with a state dir, both take the form as it opens: their
    deployments, workers and volumes must not be the same objects."""
    found = []
    for user in ("one", "two"):
        state = isolated_dirs / user
        state.mkdir()
        monkeypatch.setenv("SDTUI_STATE_DIR", str(state))
        found.append(await first_form(isolated_dirs / "outputs", tiny_model))
    (name_one, one), (name_two, two) = found
    assert name_one.startswith("local-") and name_two.startswith("local-")
    assert name_one != name_two and one.name == name_one and two.name == name_two
    assert one.volume != two.volume and one.volume == f"sdtui-{name_one}-models"


@pytest.mark.asyncio
async def test_a_deployment_made_as_local_is_still_the_one_a_first_start_opens(
        isolated_dirs, tiny_model) -> None:
    """Made before names carried the state dir's id, and recent.json lost since: the form
    still opens on it, so its resume and teardown find what it created."""
    ledger = Ledger.open("local", "local")
    ledger.set_params(models=[str(tiny_model)], volume="sdtui-models")
    ledger.record("volume", "sdtui-models", created=True)
    assert recent.load().current is None
    name, settings = await first_form(isolated_dirs / "outputs", tiny_model)
    assert (name, settings.name, settings.volume) == ("local", "local", "sdtui-models")


# --- 26: a teardown that kept the volume is not "stopped" -------------------------------------


@pytest.mark.docker
@pytest.mark.asyncio
async def test_a_torn_down_deployment_whose_volume_was_kept_says_so(
        isolated_dirs, tiny_model, docker_client) -> None:
    """The real engine and the real steps: the volume made by provisioning, a teardown that
    keeps it, then the deployment screen's list as the real core reports it."""
    name = f"kept-{uuid.uuid4().hex[:6]}"
    deployment = open_deployment(Given(name=name, option="local",
                                       deployment={"models": [tiny_model], "base_image": BASE}),
                                 for_use=True)[1]
    try:
        run_steps([s for s in deployment.plan() if s.name in ("engine", "volume")],
                  lambda event: None)
        deployment.teardown(lambda event: None)
        assert docker_client.volumes.get(f"sdtui-{name}-models")  # kept, as asked
        app = SdtuiApp(Services(live_checks=quiet_checks, out_dir=isolated_dirs / "outputs"))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, DeployScreen)
                        and row_of(app, name)[2] != "…")
            assert row_of(app, name)[2] == "torn down (volume kept)"
    finally:
        for volume in docker_client.volumes.list(filters={"name": f"sdtui-{name}-models"}):
            volume.remove(force=True)


def row_of(app: SdtuiApp, name: str) -> list[str]:
    table = app.screen.query_one("#deployments", DataTable)
    return [str(cell) for cell in table.get_row(name)]


# --- 8: the Batch form names its field, not the flag ------------------------------------------


@pytest.mark.asyncio
async def test_zero_gpus_is_marked_in_the_forms_words(isolated_dirs, tiny_model) -> None:
    app = batch_app(FakeBatchDeployment(), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#choose-batch")
        app.screen.query_one("#batch-gpus", Input).value = "0"
        await until(pilot, lambda: text_of(app, "#batch-gpus-error") != "")
        shown = text_of(app, "#batch-gpus-error")
    assert "--gpus" not in shown and "pass " not in shown
    assert "“GPUs (one shard each)”" in shown and "1 to 256" in shown


# --- 19: the base image, checked before anything is created -----------------------------------


@pytest.mark.docker
@pytest.mark.asyncio
async def test_a_base_image_the_engine_cannot_get_is_a_cross_before_launch(
        isolated_dirs, tiny_model, docker_client) -> None:
    """The real checks against the real engine, which has no registry access here (as the
    walkthrough's had none): ✗ Base image, and Provision creates nothing."""
    name = f"k-{uuid.uuid4().hex[:6]}"
    missing = f"sdtui-h21-absent-{uuid.uuid4().hex[:6]}:1"
    made: list[Any] = []
    app = SdtuiApp(Services(make_deployment=lambda option, values: made.append(values),
                            out_dir=isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        for field, value in (("name", name), ("models", str(tiny_model)),
                             ("base_image", missing)):
            app.screen.query_one(f"#local-{field}", Input).value = value
        await until(pilot, lambda: missing in text_of(app, "#checks"), timeout=60)
        line = next(x for x in text_of(app, "#checks").splitlines() if "Base image" in x)
        assert line.startswith("✗ Base image") and f"{missing}' is not on this engine" in line
        assert "“Base image”" in line and "--base-image" not in line
        app.screen.query_one("#local-models", Input).focus()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Base image" in text_of(app, "#form-error"))
        assert made == [] and isinstance(app.screen, DeployScreen)
        assert docker_client.volumes.list(filters={"name": name}) == []

        app.screen.query_one("#local-base_image", Input).value = BASE
        await until(pilot, lambda: "✓ Base image" in text_of(app, "#checks"), timeout=60)
        assert f"{BASE} is on this engine" in text_of(app, "#checks")


# --- 20: the scale-out's estimate before any AWS account --------------------------------------


@pytest.fixture
def no_aws_account(isolated_dirs, monkeypatch) -> dict[str, str]:
    """No credentials anywhere boto3 looks (as on a new user's machine)."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(isolated_dirs / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated_dirs / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return dict(os.environ)


@pytest.mark.asyncio
async def test_the_batch_form_estimates_without_an_aws_account(
        isolated_dirs, tiny_model, no_aws_account) -> None:
    prompts = isolated_dirs / "prompts.txt"
    prompts.write_text("a red fox\na lighthouse\na teapot\n")
    app = SdtuiApp(Services(out_dir=isolated_dirs / "outputs"))  # the real checks
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#choose-batch")
        for field, value in (("prompt_file", str(prompts)), ("models", str(tiny_model)),
                             ("bucket", "my-sd-models"), ("gpus", "2")):
            app.screen.query_one(f"#batch-{field}", Input).value = value
        await until(pilot, lambda: "GPUs  wall time" in text_of(app, "#checks"), timeout=60)
        shown = text_of(app, "#checks")
    assert "✗ AWS identity found" in shown  # still refused at Provision, the fix given once
    assert "✓ Estimate" in shown and "estimated without an AWS account: the built-in " in shown
    assert "at $0.526/h per GPU" in shown


def test_estimate_flag_without_an_aws_account(tmp_path, tiny_model, no_aws_account) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na lighthouse\n")
    done = subprocess.run(
        [sys.executable, "-m", "sdtui", "--no-ui", "--option", "batch", "--prompt-file",
         str(prompts), "--model", str(tiny_model), "--bucket", "my-sd-models", "--gpus", "2",
         "--spot", "--estimate"], capture_output=True, text=True, timeout=120, env=no_aws_account)
    assert done.returncode == 0, done.stderr
    assert "estimated without an AWS account: the built-in table's us-east-1 on-demand price " \
        "(spot is usually about a third of it)" in done.stderr
    assert "at $0.526/h per GPU" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "deployments").exists()  # nothing created, nothing recorded


# --- 4: a teardown while another client is attached -------------------------------------------

NO_ENGINE = ("--docker-host", "unix:///nonexistent/docker.sock")


def headless_teardown(name: str, *more: str) -> subprocess.CompletedProcess[str]:
    """`sdtui --no-ui --teardown` from another terminal. The engine it would reach next does not
    answer: a run the refusal lets through stops there, touching nothing."""
    return subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--name", name,
                           "--teardown", *NO_ENGINE, *more],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.asyncio
async def test_a_headless_teardown_while_the_app_is_attached_needs_force(
        worker, tiny_model, isolated_dirs) -> None:
    name = f"att-{uuid.uuid4().hex[:6]}"
    app = make_app(FakeDeployment(worker, name=name), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await provision(app, pilot)
        refused = headless_teardown(name)
        forced = headless_teardown(name, "--force")
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line == (f"sdtui: error: another client is attached to deployment {name}: the sdtui "
                    f"app (pid {os.getpid()}); a teardown stops the worker it is using — quit "
                    "it first, or add --force to tear down anyway")
    assert forced.returncode == 3 and "cannot reach the Docker engine" in forced.stderr
    after = headless_teardown(name)  # the app has quit: nothing to ask about
    assert after.returncode == 3 and "another client" not in after.stderr


HOLDER = """
import sys
from sdtui.client_locks import Attachment
held = Attachment(sys.argv[1])
held.acquire(note="sdtui --no-ui (pid 4242)")
print("attached", flush=True)
sys.stdin.read()
"""


@pytest.mark.asyncio
async def test_the_apps_teardown_says_another_client_is_attached(
        tiny_model, isolated_dirs) -> None:
    name = f"att-{uuid.uuid4().hex[:6]}"
    deployment = FakeDeployment(None, name=name)
    deployment.ledger.record("volume", "sdtui-models")
    other = subprocess.Popen([sys.executable, "-c", HOLDER, name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "attached\n"
        app = make_app(deployment, isolated_dirs, tiny_model)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, DeployScreen))
            await pilot.press("ctrl+t")
            await until(pilot, lambda: isinstance(app.screen, TeardownModal))
            assert text_of(app, "#teardown-others") == (
                "! Another client is attached: sdtui --no-ui (pid 4242). Tearing down stops "
                "the worker it is using.")
            await pilot.press("escape")
            other.kill()  # gone without closing: its lock file is free, and removed
            other.wait(timeout=30)
            await pilot.press("ctrl+t")
            await until(pilot, lambda: isinstance(app.screen, TeardownModal))
            assert not app.screen.query("#teardown-others")
        assert deployment.teardowns == []
    finally:
        other.kill()
        other.wait(timeout=30)


# --- issue 18: the catalogue picker on Option B's form ----------------------------------------


@pytest.mark.asyncio
async def test_picking_from_the_catalogue_fills_the_model_field_as_model_name_does(
        isolated_dirs, tiny_model) -> None:
    from sdtui.cli import build_parser
    from sdtui.flags import given_from_args
    from sdtui.ui.forms import from_form

    app = make_app(FakeDeployment(None), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        screen = app.screen
        models = screen.query_one("#local-models", Input)
        models.value = f"{tiny_model}, GFPGANv1.3.pth"
        screen.query_one("#local-catalogue").focus()
        await pilot.press("enter")  # opens the list: the prompt, sd15, sdxl
        # Each entry shows its licence and gating as --list-models words them.
        shown = screen.query_one("#local-catalogue").query_one(OptionList)
        labels = [str(shown.get_option_at_index(i).prompt) for i in range(shown.option_count)]
        for e in CATALOGUE.values():
            (label,) = [x for x in labels if x.startswith(f"{e.name} — ")]
            assert label.endswith(f"{e.licence}, {gating(e)}"), label
        assert any(x.endswith(", gated: not verified") for x in labels)
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: not models.value.startswith(str(tiny_model)), timeout=10)
        assert models.value == "sdxl, GFPGANv1.3.pth"  # the extra file stays
        values = screen.values("local")
        await pilot.press("f1")
        await until(pilot, lambda: not isinstance(app.screen, DeployScreen))
        assert "Catalogue" in table_text(app, "#help-fields")
    flags = given_from_args(build_parser().parse_args(
        ["--model", "sdxl", "--model", "GFPGANv1.3.pth"]))
    picked = from_form("local", values).deployment["models"]
    assert [str(m) for m in picked] == [str(m) for m in flags.deployment["models"]]



# --- 23: 80×24 -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_at_80x24_the_hint_and_the_picker_are_not_cut(isolated_dirs, tiny_model) -> None:
    from rich.text import Text
    from textual.widgets import Select, Static

    app = make_app(FakeDeployment(None), isolated_dirs, tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        hint = app.screen.query_one("#more-below", Static)
        await until(pilot, lambda: hint.display)
        shown = Text.from_markup(str(hint.render())).cell_len
        assert shown <= hint.content_region.width, str(hint.render())
        picker = app.screen.query_one("#local-catalogue", Select)
        prompt = Text(str(picker.prompt)).cell_len
        assert prompt + 4 <= picker.content_region.width  # the prompt, its ▼ and their gaps


# --- 22: the init image and the mask, previewed beside their fields ---------------------------


def colours_of(text: Any) -> set[str]:
    """The colours a half-block preview draws with (foreground and background of each cell)."""
    found = set()
    for span in getattr(text, "spans", []):
        style = span.style if not isinstance(span.style, str) else None
        for colour in (style.color, style.bgcolor) if style else ():
            if colour is not None:
                found.add(colour.get_truecolor().hex)
    return found


@pytest.mark.asyncio
async def test_the_init_image_and_mask_are_previewed_beside_their_fields(isolated_dirs) -> None:
    from PIL import Image
    from rich.text import Text
    from textual.widgets import Collapsible, Static

    picture, mask = isolated_dirs / "red.png", isolated_dirs / "mask.png"
    Image.new("RGB", (64, 32), (255, 0, 0)).save(picture)
    Image.new("L", (64, 32), 255).save(mask)
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        screen.query_one("#more", Collapsible).collapsed = False
        preview = screen.query_one("#inputs-preview", Static)
        assert not preview.display  # nothing to show: it takes no room from the fields
        screen.query_one("#init_image", Input).value = str(picture)
        await until(pilot, lambda: "#ff0000" in colours_of(preview.content))
        screen.query_one("#mask", Input).value = str(mask)
        await until(pilot, lambda: "#ffffff" in colours_of(preview.content))
        shown = preview.content
        assert isinstance(shown, Text) and "▀" in shown.plain
        assert "init image" in shown.plain and "mask" in shown.plain
        screen.query_one("#init_image", Input).value = str(isolated_dirs / "nothing.png")
        screen.query_one("#mask", Input).value = ""
        await until(pilot, lambda: not preview.display)
        assert "▀" not in str(preview.content)


# --- 24: 220×60, short fields side by side --------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("option", ["aws", "batch"])
async def test_at_220x60_short_fields_sit_side_by_side(isolated_dirs, tiny_model, option) -> None:
    app = make_app(FakeDeployment(None), isolated_dirs, tiny_model)
    async with app.run_test(size=(220, 60)) as pilot:
        await pilot.click(f"#choose-{option}")
        await pilot.pause()
        short = {"aws": ("instance_type", "idle_minutes"), "batch": ("gpus", "steps")}[option]
        first, other = (app.screen.query_one(f"#{option}-{n}", Input) for n in short)
        path = app.screen.query_one(f"#{option}-models", Input)
        assert first.region.width < path.region.width // 2  # a number is not as wide as a path
        assert any(w.region.y == first.region.y and w.region.x > first.region.x
                   for w in app.screen.query(f"#form-{option} Input, #form-{option} Checkbox"))
        assert other.region.width < path.region.width // 2
    app = make_app(FakeDeployment(None), isolated_dirs, tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:  # narrow: one under the other
        await pilot.click(f"#choose-{option}")
        await pilot.pause()
        first = app.screen.query_one(f"#{option}-{short[0]}", Input)
        path = app.screen.query_one(f"#{option}-models", Input)
        assert first.size.width == path.size.width
