"""Fields: checked as you type with the error right under the field, a refused Generate that
moves the focus and re-rolls nothing, the chooser's focus, and a layout that fits."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox, Collapsible, Input, Label, RadioSet

from sdtui.ui.app import SdtuiApp
from sdtui.ui.prompt_form import MORE_GRID
from sdtui.ui.screens.prompt import PromptScreen

from .conftest import fake_services
from .fakes import FakeDeployment, IdleWorker
from .test_flows import SIZE, steps_ended, text_of, until

pytestmark = pytest.mark.asyncio


async def prompt_panel(app: SdtuiApp, pilot) -> PromptScreen:  # noqa: ANN001
    app.open_prompt(FakeDeployment(None, name="fields"), IdleWorker())  # type: ignore[arg-type]
    await until(pilot, lambda: isinstance(app.screen, PromptScreen))
    return app.screen  # type: ignore[return-value]


def make(isolated_dirs) -> SdtuiApp:  # noqa: ANN001
    return SdtuiApp(fake_services(FakeDeployment(None), isolated_dirs / "outputs"))


async def test_number_fields_take_only_numbers_in_range(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        steps = screen.query_one("#steps", Input)
        steps.value = ""
        steps.focus()
        await pilot.press("x", "y", "z", "2", "0", "0")
        assert steps.value == "200"  # the letters were refused
        await until(pilot, lambda: "steps must be from 1 to 150, got 200" in text_of(
            app, "#steps-error"))
        assert steps.has_class("-invalid")
        await pilot.press("backspace")
        await until(pilot, lambda: text_of(app, "#steps-error") == "")
        assert not steps.has_class("-invalid")
        cfg = screen.query_one("#cfg", Input)
        cfg.value = ""
        cfg.focus()
        await pilot.press("a", "8", ".", "5")
        assert cfg.value == "8.5"


async def test_each_error_sits_right_under_its_field(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        screen.query_one("#more", Collapsible).collapsed = False
        await pilot.pause()
        for name in ("negative_prompt", "steps", "cfg", "count", "width", "height", "seed",
                     "init_image", *MORE_GRID):
            field = screen.query_one(f"#{name}")
            error = screen.query_one(f"#{name}-error")
            assert error.region.y == field.region.bottom, name
            assert error.region.x == field.region.x, name


async def test_a_refused_generate_focuses_the_first_bad_field_and_keeps_the_seed(
        isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        screen.query_one("#prompt").text = "a cat"
        screen.query_one("#lock-seed", Checkbox).value = False
        screen.query_one("#seed", Input).value = "123"
        screen.query_one("#width", Input).value = "65"
        screen.query_one("#steps", Input).value = "0"
        screen.query_one("#gfpgan", Input).value = "2"
        await pilot.press("ctrl+g")
        assert app.focused is screen.query_one("#steps", Input)  # the first, in form order
        assert "multiple of 8" in text_of(app, "#width-error")
        assert "faces (GFPGAN) must be from 0 to 1" in text_of(app, "#gfpgan-error")
        assert not screen.query_one("#more", Collapsible).collapsed  # opened to show it
        assert screen.query_one("#seed", Input).value == "123"  # nothing re-rolled
        assert not screen.generating


async def test_the_chooser_opens_focused_on_the_chosen_option(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        options = app.screen.query_one("#option", RadioSet)
        assert app.focused is options
        assert options.pressed_button.id == "choose-local"
        assert options._selected == options.pressed_index  # the highlight is on it too
        await pilot.press("up", "enter")
        await until(pilot, lambda: app.screen.query_one("#form-aws").display)
        assert not app.screen.query_one("#form-local").display


async def test_the_prompt_fields_line_up_and_more_fits_80_columns(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await prompt_panel(app, pilot)
        tops = {name: screen.query_one(f"#{name}").region.y for name in ("steps", "cfg",
                                                                           "count")}
        assert len(set(tops.values())) == 1, tops
        seed = screen.query_one("#seed", Input)
        assert seed.content_region.width >= 10  # all ten digits of a seed show
        screen.query_one("#more", Collapsible).collapsed = False
        await pilot.pause()
        form = screen.query_one("#prompt-form")
        assert form.virtual_size.width <= form.size.width  # no sideways scrolling
        labels = [label for label in screen.query("#more Label")]
        for label in labels:
            text = str(label.render())
            assert label.region.width >= len(text), text  # nothing clipped
        rows: dict[int, list] = {}
        for label in labels:
            rows.setdefault(label.region.y, []).append(label.region)
        for regions in rows.values():  # labels side by side never run together
            regions.sort(key=lambda r: r.x)
            for left, right in zip(regions, regions[1:], strict=False):
                assert left.right < right.x
        title = screen.query_one("#more").query_one("CollapsibleTitle")
        assert title.region.width >= len(str(title.render()).strip())


async def test_the_chooser_says_when_fields_are_below_the_fold(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        hint = app.screen.query_one("#more-below")
        await until(pilot, lambda: hint.display)
        assert "more fields below" in str(hint.render())
        form = app.screen.query_one("#deploy-form")
        form.scroll_end(animate=False)
        await until(pilot, lambda: not hint.display)
    app = make(isolated_dirs)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.pause(0.2)
        assert not app.screen.query_one("#more-below").display  # everything fits


async def test_the_footer_shows_only_the_keys_that_act(worker, tiny_model, isolated_dirs
                                                       ) -> None:
    def footer() -> set[str]:
        return {str(k.description) for k in app.screen.query("FooterKey")}

    app = SdtuiApp(fake_services(FakeDeployment(worker), isolated_dirs / "outputs",
                                 models=str(tiny_model)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shown = footer()
        assert "Provision" in shown and not {"Resume", "Tear down"} & shown  # none exist yet
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.pause()
        shown = footer()
        assert {"Generate", "Tear down"} <= shown and "Cancel" not in shown
        screen = app.screen
        screen.query_one("#prompt").text = "slow"
        for name, value in (("steps", "150"), ("count", "4"), ("width", "64"),
                            ("height", "64")):
            screen.query_one(f"#{name}", Input).value = value
        await pilot.press("ctrl+g")
        await until(pilot, lambda: "Cancel" in footer())
        shown = footer()
        assert "Generate" not in shown and "Tear down" not in shown
        assert "Quit (the generation goes on)" in shown  # what quitting does to it
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating)
        await pilot.pause()
        assert "Cancel" not in footer()
        await pilot.press("ctrl+t")
        await until(pilot, lambda: type(app.screen).__name__ == "TeardownModal")
        await pilot.click("#confirm")
        await until(pilot, lambda: steps_ended(app, "teardown"))
        await pilot.pause()
        shown = footer()
        assert "Back" in shown and not {"Retry", "Tear down", "Cancel"} & shown


async def test_labels_name_what_the_field_is(isolated_dirs) -> None:
    app = make(isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await prompt_panel(app, pilot)
        labels = {str(label.render()) for label in screen.query(Label)}
        assert {"steps", "cfg", "count", "width", "height", "sampler", "seed"} <= labels
