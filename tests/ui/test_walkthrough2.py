"""The app's second walkthrough (issue 21): what a new user met, each driven as they met it."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from textual.widgets import Button, Checkbox, Collapsible, DataTable, Input, Select, TextArea

from sdtui import recent
from sdtui.deploy.base import DeploymentStatus
from sdtui.ledger import Ledger
from sdtui.outputs import save_image
from sdtui.ui.app import SdtuiApp, farewell
from sdtui.ui.checks import Check
from sdtui.ui.core import Services, make_deployment
from sdtui.ui.screens.confirm import ConfirmModal
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.help import HelpScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen
from sdtui.ui.screens.quit import QuitModal
from sdtui.ui.screens.teardown import TeardownModal
from sdtui.ui.widgets.gallery import Gallery
from sdtui.ui.widgets.steps import StepRow

from .conftest import fake_services, quiet_checks
from .fakes import FakeDeployment, IdleWorker
from .test_fields import make, prompt_panel
from .test_flows import SIZE, generate, make_app, provision, text_of, until
from .worker_relay import SubprocessWorker

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
        # The checks try the default engine and volume (a check begun before the edit may
        # still report the old values first).
        await until(pilot, lambda: any(
            c["docker_host"] == "" and c["volume"] == "sdtui-models" for c in checked))
        app.screen.query_one("#local-models", Input).focus()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: bool(made))
    settings = made[0].settings
    assert settings.docker_host is None  # DOCKER_HOST or the context, as the checks used
    assert settings.volume == "sdtui-models"


# --- 3: a collapsed More says what it holds --------------------------------------------------


async def test_more_says_what_it_holds_and_opens_when_a_restart_brings_it_back(
        isolated_dirs) -> None:
    picture = isolated_dirs / "init.png"
    Image.new("RGB", (64, 64), "red").save(picture)
    recent.remember_generate({"prompt": "a cat", "init_image": str(picture),
                              "mask": str(picture)})
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        more = screen.query_one("#more", Collapsible)
        assert more.title == "More: init image and mask set"
        assert not more.collapsed  # a restart's init image and mask are in sight
        more.collapsed = True
        screen.query_one("#init_image", Input).value = ""
        screen.query_one("#mask", Input).value = ""
        await until(pilot, lambda: more.title.startswith("More: img2img"))
        screen.query_one("#gfpgan", Input).value = "0.5"
        await until(pilot, lambda: more.title == "More: faces set")


# --- 9: r re-runs and leaves the form alone ---------------------------------------------------


async def test_rerun_leaves_the_form_alone(worker, tiny_model, isolated_dirs) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        gallery = await generate(app, pilot, "first prompt")
        first = gallery.images[0]
        screen.query_one("#prompt", TextArea).text = "being written"
        screen.query_one("#count", Input).value = "4"
        screen.query_one("#seed", Input).value = "777"
        screen.query_one("#lock-seed", Checkbox).value = False
        await pilot.press("ctrl+l", "r")
        await until(pilot, lambda: len(gallery.images) == 2 and not screen.generating)
        again = gallery.images[1]
        assert again.seed == first.seed and again.params["prompt"] == "first prompt"
        assert again.params["count"] == 1  # the recorded request, not the form's 4
        assert screen.query_one("#prompt", TextArea).text == "being written"
        assert screen.query_one("#count", Input).value == "4"
        assert screen.query_one("#seed", Input).value == "777"
        assert not screen.query_one("#lock-seed", Checkbox).value


# --- 10: o without a display says so, and leaves no defunct child ------------------------------


def _zombie_children() -> list[str]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(stat_file.parent.name)
    return found


def _opener(isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> Path:
    """An xdg-open that records its call and exits as the real one does when no method is
    available (status 3)."""
    ran = isolated_dirs / "opener-ran"
    bin_dir = isolated_dirs / "bin"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\necho "$1" >> {ran}\nexit {code}\n')
    opener.chmod(opener.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return ran


async def _press_open(isolated_dirs: Path) -> tuple[SdtuiApp, Any, Path]:
    out = isolated_dirs / "outputs"
    path = save_image(out, _png(), {"prompt": "x", "seed": 1}, {"deployment": "fake"})
    deployment = FakeDeployment(None)
    return SdtuiApp(fake_services(deployment, out)), deployment, path


async def _panel_gallery(app: SdtuiApp, pilot: Any, deployment: FakeDeployment) -> Gallery:
    """The prompt panel on an idle worker; its gallery."""
    app.open_prompt(deployment, IdleWorker())  # type: ignore[arg-type]
    await until(pilot, lambda: isinstance(app.screen, PromptScreen))
    return app.screen.query_one("#gallery", Gallery)


async def _open_and_wait(app: SdtuiApp, pilot: Any, deployment: FakeDeployment, said: str
                         ) -> None:
    """The prompt panel, then `o` on the gallery's image, until the app says `said`."""
    await _panel_gallery(app, pilot, deployment)
    await pilot.press("ctrl+l", "o")
    await until(pilot, lambda: any(str(n.message) == said for n in app._notifications))


async def test_open_without_a_display_says_so_and_starts_nothing(isolated_dirs, monkeypatch
                                                                ) -> None:
    ran = _opener(isolated_dirs, monkeypatch, 3)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app, deployment, path = await _press_open(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await _open_and_wait(app, pilot, deployment, "No viewer could open it (there is no "
                             "display (DISPLAY and WAYLAND_DISPLAY are unset)); the file is "
                             f"{path}")
    assert not ran.exists()  # no text-mode browser on our terminal
    assert _zombie_children() == []


async def test_an_opener_that_fails_is_reported_and_reaped(isolated_dirs, monkeypatch) -> None:
    ran = _opener(isolated_dirs, monkeypatch, 3)
    monkeypatch.setenv("DISPLAY", ":99")  # a display nothing answers on
    app, deployment, path = await _press_open(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await _open_and_wait(app, pilot, deployment, "No viewer could open it (xdg-open exited "
                             f"with status 3); the file is {path}")
        assert ran.read_text().strip() == str(path)
        await until(pilot, lambda: _zombie_children() == [])


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, "PNG")
    return buf.getvalue()


# --- 6, 7, 29: the deployment form refuses what its checks and fields mark ✗ -------------------


def _aws_app(isolated_dirs: Path, made: list[Any], identity: str = "fail") -> SdtuiApp:
    def checks(option: str, values: dict[str, Any]) -> list[Check]:
        # As _aws_identity answers without credentials (its fix line, once).
        return [Check("AWS identity found", identity,  # type: ignore[arg-type]
                      "no AWS credentials found — run `aws configure`"),
                Check("Model files readable", "ok", values.get("models", ""))]

    def make(option: Any, values: dict[str, Any]) -> FakeDeployment:
        made.append(values)
        return FakeDeployment(None, name="made")

    return SdtuiApp(Services(make_deployment=make, live_checks=checks,
                             out_dir=isolated_dirs / "outputs"))


async def _fill_aws(app: SdtuiApp, pilot: Any, model: Path) -> None:
    await pilot.click("#choose-aws")
    await until(pilot, lambda: app.screen.query_one("#form-aws").display)
    app.screen.query_one("#aws-bucket", Input).value = "my-sd-models-1234"
    app.screen.query_one("#aws-models", Input).value = str(model)  # last: checks show it


async def test_provision_is_refused_at_the_form_on_a_failed_check(isolated_dirs, tiny_model
                                                                  ) -> None:
    made: list[Any] = []
    app = _aws_app(isolated_dirs, made)
    async with app.run_test(size=SIZE) as pilot:
        await _fill_aws(app, pilot, tiny_model)
        # Checks of the filled form (its model path shown) are on screen.
        await until(pilot, lambda: "✗ AWS identity found" in text_of(app, "#checks")
                    and str(tiny_model) in text_of(app, "#checks"))
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "AWS identity found" in text_of(app, "#form-error"))
        assert isinstance(app.screen, DeployScreen) and made == []
        error = text_of(app, "#form-error")
        assert "fix what Checks shows" in error and "aws configure" not in error  # fix: once


async def test_idle_minutes_is_checked_as_typed_and_the_form_message_goes(isolated_dirs,
                                                                         tiny_model) -> None:
    made: list[Any] = []
    app = _aws_app(isolated_dirs, made, identity="ok")
    async with app.run_test(size=SIZE) as pilot:
        await _fill_aws(app, pilot, tiny_model)
        idle = app.screen.query_one("#aws-idle_minutes", Input)
        idle.value = "4x7"
        await until(pilot, lambda: "not a number of minutes" in text_of(
            app, "#aws-idle_minutes-error"))
        assert idle.has_class("-invalid")
        idle.value = "0"
        await until(pilot, lambda: "1 or more" in text_of(app, "#aws-idle_minutes-error"))
        await pilot.press("ctrl+s")
        assert text_of(app, "#form-error") == "Fix the fields marked ✗ first."
        idle.value = "45"
        await until(pilot, lambda: text_of(app, "#aws-idle_minutes-error") == "")
        assert text_of(app, "#form-error") == ""  # nothing left to fix
        assert "idle auto-stop after 45 min" in text_of(app, "#aws-estimate")
        bucket = app.screen.query_one("#aws-bucket", Input)
        bucket.value = ""
        await pilot.press("ctrl+s")
        await until(pilot, lambda: text_of(app, "#aws-bucket-error").startswith(
            "✗ Enter a bucket name — 3–63 lowercase letters"))


# --- 17: a finished teardown shows no pending step ---------------------------------------------


async def test_a_finished_teardown_shows_its_step_done(isolated_dirs) -> None:
    deployment = FakeDeployment(None, name="gone")
    app = SdtuiApp(fake_services(deployment, isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        app._open_steps(ProvisionScreen(deployment, mode="teardown"))
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen)
                    and app.screen.report is not None)
        row = app.screen.query_one("#step-teardown", StepRow)
        await pilot.pause()
        assert row.state == "done"
        assert "pending" not in str(row.render()) and "✓ Tear down gone" in str(row.render())


# --- 25: no progress bar while idle ------------------------------------------------------------


async def test_no_progress_bar_while_idle(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        assert not screen.query_one("#gen-progress").display  # no "0%" before any Generate


# --- 11: a sampler/schedule mismatch is marked as soon as either is chosen ----------------------


async def test_a_schedule_the_sampler_lacks_is_marked_when_chosen(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        screen.query_one("#scheduler", Select).value = "euler_a"
        screen.query_one("#schedule", Select).value = "karras"
        await until(pilot, lambda: "euler_a has no Karras schedule" in text_of(
            app, "#schedule-error"))
        assert "default" not in text_of(app, "#schedule-error")  # the list's own words
        assert "Uniform" in text_of(app, "#schedule-error")
        shown = {value: str(prompt) for prompt, value in
                 screen.query_one("#schedule", Select)._options}
        assert shown["karras"] == "Karras ✗ not for euler_a" and shown["default"] == "Uniform"
        screen.query_one("#scheduler", Select).value = "dpmpp_2m"
        await until(pilot, lambda: text_of(app, "#schedule-error") == "")
        shown = {value: str(prompt) for prompt, value in
                 screen.query_one("#schedule", Select)._options}
        assert shown["karras"] == "Karras"


# --- 13: the newest image's row is in sight ---------------------------------------------------


def _last_row_in_sight(gallery: Gallery) -> bool:
    last = len(gallery.images) - 1
    top = gallery.scroll_y
    shown = gallery.scrollable_content_region.height - 1  # under the header
    return gallery.cursor_row == last and top <= last < top + shown


async def _newest_in_sight(pilot: Any, gallery: Gallery) -> None:
    try:
        await until(pilot, lambda: _last_row_in_sight(gallery), timeout=10)
    except AssertionError:
        top = int(gallery.scroll_y)
        shown = gallery.scrollable_content_region.height - 1
        raise AssertionError(f"rows {top + 1}-{top + shown} of {len(gallery.images)} in sight, "
                             f"cursor on row {gallery.cursor_row + 1}") from None


@pytest.mark.parametrize("size", [(80, 24), (220, 60)])
async def test_the_gallery_shows_the_newest_row(worker, tiny_model, isolated_dirs, size) -> None:
    out = isolated_dirs / "outputs"
    for seed in range(40):
        save_image(out, _png(), {"prompt": f"p{seed}", "seed": seed}, {"deployment": "fake"})
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=size) as pilot:
        screen = await provision(app, pilot)
        gallery = screen.query_one("#gallery", Gallery)
        await until(pilot, lambda: len(gallery.images) == 40)
        await _newest_in_sight(pilot, gallery)
        await generate(app, pilot, "new", count_before=40)  # the row a Generate adds
        assert len(gallery.images) == 41
        await _newest_in_sight(pilot, gallery)


# --- 4: the app follows other clients on its deployment ----------------------------------------


async def test_the_gallery_picks_up_images_another_client_saved(isolated_dirs) -> None:
    out = isolated_dirs / "outputs"
    deployment = FakeDeployment(None)
    app = SdtuiApp(fake_services(deployment, out))
    async with app.run_test(size=SIZE) as pilot:
        gallery = await _panel_gallery(app, pilot, deployment)
        assert gallery.images == []
        # What a --no-ui run on the same deployment writes: the PNG and its index line.
        path = save_image(out, _png(), {"prompt": "headless", "seed": 5}, {"deployment": "fake"})
        save_image(out, _png(), {"prompt": "elsewhere", "seed": 6}, {"deployment": "other"})
        await until(pilot, lambda: [i.path for i in gallery.images] == [path])
        assert gallery.images[0].params["prompt"] == "headless"


async def test_a_generate_queued_behind_another_client_says_it_waits(worker, tiny_model,
                                                                    isolated_dirs) -> None:
    other = worker.attach()  # another client on the same worker (a --no-ui run, say)
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        events = other.generate(prompt="theirs", steps=150, width=64, height=64, seed=1)
        first = next(events)  # their request is running now
        assert first["type"] in ("progress", "preview")
        screen.query_one("#prompt", TextArea).text = "ours"
        for name, value in (("steps", "2"), ("width", "64"), ("height", "64")):
            screen.query_one(f"#{name}", Input).value = value
        await pilot.press("ctrl+g")
        status = screen.query_one("#gen-status")
        await until(pilot, lambda: "busy with another client's request" in str(status.render()))
        other.cancel(first["id"])
        for _ in events:  # theirs ends (cancelled); ours then runs
            pass
        other.close()
        gallery = screen.query_one("#gallery", Gallery)
        await until(pilot, lambda: len(gallery.images) == 1 and not screen.generating)
        assert gallery.images[0].params["prompt"] == "ours"


# --- 26: a deployment's state is shown whole ---------------------------------------------------


class _Absent(FakeDeployment):
    def status(self) -> DeploymentStatus:
        return DeploymentStatus(self.name, self.option, "absent", [])


async def test_a_deployment_state_is_not_clipped(isolated_dirs) -> None:
    deployment = _Absent(None, name="old")
    deployment.ledger.record("volume", "sdtui-models")
    app = SdtuiApp(fake_services(deployment, isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#deployments", DataTable)
        await until(pilot, lambda: "absent" in str(table.get_row_at(0)))
        await pilot.pause()
        state = table.ordered_columns[2]
        assert state.get_render_width(table) - 2 * table.cell_padding >= len("absent")


# --- 15, 16: the palette -------------------------------------------------------------------------


async def test_the_palette_has_help_one_keys_panel_and_our_quit(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Help"].startswith("f1")
        assert "Keys" not in commands  # one key panel: F1's
        assert commands["Quit"] == ("ctrl+q · Quit; first says what keeps running and what it "
                                    "costs")
        await app.screen.run_action("choose('batch')")
        await until(pilot, lambda: app.focused is not None and app.focused.id == "batch-name")


# --- 27: one dialog pattern ----------------------------------------------------------------------


async def test_every_dialog_names_its_keys_and_escape_cancels(isolated_dirs) -> None:
    deployment = FakeDeployment(None, name="dlg")
    deployment.ledger.record("container", "sdtui-dlg")
    app = SdtuiApp(fake_services(deployment, isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "ready" in str(
            app.screen.query_one("#deployments", DataTable).get_row_at(0)))
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal))
        labels = [str(b.label) for b in app.screen.query(Button)]
        assert labels == ["Tear down (t)", "Cancel (esc)"]
        assert app.focused is app.screen.query_one("#cancel")  # Enter deletes nothing
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        assert deployment.teardowns == []
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal))
        await pilot.press("t")  # its key, as the quit dialog's t and the delete dialog's y
        await until(pilot, lambda: deployment.teardowns == [False])
        app.push_screen(ConfirmModal("Delete x?", "detail", "Delete"))
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        assert [str(b.label) for b in app.screen.query(Button)] == ["Delete (y)",
                                                                    "Cancel (esc)"]


# --- 28: F1 on the chooser -----------------------------------------------------------------------


async def test_chooser_help_lists_each_key_once_with_the_lists_keys(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = app.screen.keys_table().columns
        keys = list(rows[0]._cells)
        assert keys.count("^q") == 1
        assert not any("While generating" in str(c) for c in rows[1]._cells)
        assert {"↑ / ↓", "enter", "tab / shift+tab"} <= set(keys)
        assert rows[2].header == "where it works" and "every screen" in rows[2]._cells


# --- 21: leaving a deployment running says so on the way out ------------------------------------


async def test_leaving_a_deployment_running_prints_what_and_how_to_stop_it(isolated_dirs
                                                                          ) -> None:
    deployment = FakeDeployment(None, name="left")
    app = SdtuiApp(fake_services(deployment, isolated_dirs / "outputs"))
    async with app.run_test(size=SIZE) as pilot:
        app.open_prompt(deployment, IdleWorker())  # type: ignore[arg-type]
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: isinstance(app.screen, QuitModal))
        await pilot.press("l")
        await until(pilot, lambda: app.return_code is not None)
    assert farewell(app) == ("sdtui: left (local) is still running; to stop it: "
                             "sdtui --no-ui --name left --teardown")


async def test_quitting_with_nothing_running_prints_nothing(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))
        await pilot.press("ctrl+q")
        await until(pilot, lambda: app.return_code is not None)
    assert farewell(app) is None


async def test_the_status_bar_follows_what_another_client_makes_the_worker_do(
        worker, tiny_model, isolated_dirs) -> None:
    other = worker.attach()  # a --no-ui run on the same deployment, say
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await provision(app, pilot)
        assert app.worker_state == "ready"
        events = other.generate(prompt="theirs", steps=150, width=64, height=64, seed=2)
        first = next(events)
        await until(pilot, lambda: app.worker_state == "generating (another client)")
        other.cancel(first["id"])
        for _ in events:
            pass
        other.close()
        await until(pilot, lambda: app.worker_state == "ready")


async def test_a_worker_another_client_tore_down_is_shown_gone_with_the_next_step(
        tiny_model, isolated_dirs) -> None:
    own = SubprocessWorker(tiny_model, isolated_dirs / "worker.log")  # this test ends it
    try:
        app = make_app(FakeDeployment(own), isolated_dirs, tiny_model)
        async with app.run_test(size=SIZE) as pilot:
            screen = await provision(app, pilot)
            own.stop()  # what a headless --teardown does to the container
            await until(pilot, lambda: app.worker_state == "gone")
            assert "ctrl+b, then Resume" in str(screen.query_one("#gen-status").render())
    finally:
        own.stop()
