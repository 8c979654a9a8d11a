"""The prompt panel's "More" fields (the guide's -I/-f, -G, -U, -v/-V, -g) with the Pilot,
against a fake deployment and the real worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from textual.widgets import Checkbox, Collapsible, Input, Select, TextArea

from sdtui import protocol
from sdtui.devtools.esrgan_weights import write_esrgan_weights

from .fakes import FakeDeployment
from .test_flows import SIZE, generate, make_app, provision, text_of, until

pytestmark = pytest.mark.asyncio


def request_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k in protocol.GENERATE_FIELDS and k != "id"}


async def test_more_fields_show_errors_next_to_the_field(worker, tiny_model, isolated_dirs
                                                        ) -> None:
    not_an_image = isolated_dirs / "notes.png"
    not_an_image.write_text("just text")
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        assert screen.query_one("#more", Collapsible).collapsed  # the main form stays simple
        screen.query_one("#prompt", TextArea).text = "a cat"
        screen.query_one("#init_image", Input).value = str(isolated_dirs / "missing.png")
        await pilot.press("ctrl+g")
        assert "does not exist" in text_of(app, "#init_image-error")
        assert not screen.query_one("#more", Collapsible).collapsed  # opened to show it
        screen.query_one("#init_image", Input).value = str(not_an_image)
        await pilot.press("ctrl+g")
        assert "notes.png is not a PNG or JPEG image" in text_of(app, "#init_image-error")
        screen.query_one("#init_image", Input).value = ""
        screen.query_one("#strength", Input).value = "1.5"
        await pilot.press("ctrl+g")
        assert "strength must be from 0 to 1" in text_of(app, "#strength-error")
        screen.query_one("#strength", Input).value = "0.5"
        screen.query_one("#gfpgan", Input).value = "lots"
        await pilot.press("ctrl+g")
        assert "faces (GFPGAN) must be a number" in text_of(app, "#gfpgan-error")
        assert text_of(app, "#strength-error") == ""
        assert not screen.generating


async def test_img2img_and_upscale_x2_then_rerun_from_gallery(worker, tiny_model,
                                                               isolated_dirs) -> None:
    write_esrgan_weights(tiny_model.parent / "RealESRGAN_x2plus.pth", scale=2, blocks=2)
    init = isolated_dirs / "init.png"
    Image.new("RGB", (80, 48), "orange").save(init)
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        for name, value in (("init_image", str(init)), ("strength", "0.6"),
                            ("upscale_strength", "0.5")):
            screen.query_one(f"#{name}", Input).value = value
        screen.query_one("#fit", Select).value = "crop"
        screen.query_one("#upscale", Select).value = "2"
        gallery = await generate(app, pilot, "an orange fox")
        first = gallery.images[0]
        with Image.open(first.path) as image:
            assert image.size == (128, 128)  # 64×64 sampled, upscaled ×2
        assert first.params["upscale"] == 2 and first.params["fit"] == "crop"
        assert first.params["strength"] == 0.6
        # The init image is stored once beside the outputs; the image records where.
        stored = first.path.parent / first.params["init_image"]["path"]
        assert stored.read_bytes() == init.read_bytes()
        # The form changes; the gallery's re-run still sends what the image was made with.
        screen.query_one("#upscale", Select).value = "off"
        screen.query_one("#init_image", Input).value = ""
        await pilot.press("ctrl+l", "r")
        await until(pilot, lambda: len(gallery.images) == 2 and not screen.generating)
        again = gallery.images[1]
        assert again.path != first.path
        assert request_params(again.params) == {**request_params(first.params), "grid": False}
        with Image.open(first.path) as a, Image.open(again.path) as b:
            assert a.size == b.size == (128, 128)
            assert a.tobytes() == b.tobytes()


async def test_variations_and_grid_of_a_batch(worker, tiny_model, isolated_dirs) -> None:
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        screen.query_one("#count", Input).value = "2"
        screen.query_one("#grid", Checkbox).value = True
        screen.query_one("#variation_amount", Input).value = "0.3"
        screen.query_one("#variation_seed", Input).value = "77"
        gallery = await generate(app, pilot, "two cats")
        await until(pilot, lambda: "grid saved" in text_of(app, "#saved-path"))
        assert gallery.images[0].params["variation_seed"] == 77
        assert all(i.params["variation_amount"] == 0.3 for i in gallery.images)
        grid = Path(text_of(app, "#saved-path").removeprefix("grid saved "))
        assert grid.parent == gallery.images[0].path.parent
        with Image.open(grid) as image:
            assert image.size == (128, 64)  # two 64×64 images side by side


async def test_schedule_select_and_mask_field_reach_the_worker(worker, tiny_model,
                                                               isolated_dirs) -> None:
    init, mask = isolated_dirs / "init.png", isolated_dirs / "mask.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    square = Image.new("L", (64, 64), 0)
    square.paste(255, (16, 16, 48, 48))
    square.save(mask)
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await provision(app, pilot)
        screen.query_one("#prompt", TextArea).text = "a cat"
        screen.query_one("#mask", Input).value = str(mask)
        await pilot.press("ctrl+g")
        assert "needs the image it masks" in text_of(app, "#mask-error")
        assert not screen.generating
        screen.query_one("#scheduler", Select).value = "dpmpp_2m"
        screen.query_one("#schedule", Select).value = "karras"
        screen.query_one("#init_image", Input).value = str(init)
        screen.query_one("#strength", Input).value = "1"
        gallery = await generate(app, pilot, "a cat")
        params = gallery.images[0].params
        assert (params["scheduler"], params["schedule"]) == ("dpmpp_2m", "karras")
        assert params["mask"] and params["init_image"]
        with Image.open(gallery.images[0].path) as image:
            assert image.convert("RGB").getpixel((2, 2)) == (200, 30, 30)  # kept outside
