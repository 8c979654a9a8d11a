"""The scale-out in the app: the Batch choice and its form (checked inline, the run's lines made
by the core from the prompt file), provisioning, then the run screen with per-shard progress and
the gallery filling as the images land; cancel. The deployment is a fake (no AWS here; the
estimate against moto is tested in tests/aws/batch/test_app.py)."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import DataTable, Input

from sdtui.outputs import read_index, read_metadata
from sdtui.ui.app import SdtuiApp
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.run import RunScreen
from sdtui.ui.widgets.gallery import Gallery

from .conftest import fake_services
from .fakes import FakeBatchDeployment
from .test_flows import SIZE, text_of, until

PROMPTS = ["a red fox", "a lighthouse", "a teapot"]


def batch_app(deployment: FakeBatchDeployment, dirs, tiny_model) -> SdtuiApp:
    services = fake_services(deployment, dirs / "outputs")  # type: ignore[arg-type]
    return SdtuiApp(services)


async def fill(pilot, app: SdtuiApp, prompt_file, model, **more: str) -> None:
    await pilot.click("#choose-batch")
    screen = app.screen
    values = {"prompt_file": str(prompt_file), "models": str(model), "bucket": "my-sd-models",
              "gpus": "2", "steps": "2", "width": "64", "height": "64", **more}
    for name, value in values.items():
        screen.query_one(f"#batch-{name}", Input).value = value


@pytest.mark.asyncio
async def test_batch_form_run_screen_and_gallery(tiny_model, isolated_dirs) -> None:
    prompts = isolated_dirs / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    deployment = FakeBatchDeployment()
    app = batch_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await fill(pilot, app, prompts, tiny_model, gpus="0", steps="0")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, DeployScreen)  # nothing submitted
        assert "0 GPUs is out of range" in text_of(app, "#batch-gpus-error")
        assert "steps must be from 1 to 150" in text_of(app, "#batch-steps-error")
        app.screen.query_one("#batch-gpus", Input).value = "2"
        app.screen.query_one("#batch-steps", Input).value = "2"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        run = app.screen
        await until(pilot, lambda: "succeeded" in text_of(app, "#run-summary"))
        assert "3/3 images" in text_of(app, "#run-summary")
        gallery = run.query_one(Gallery)
        assert [image.params["prompt"] for image in gallery.images] == PROMPTS
        shards = run.query_one("#shards", DataTable)
        assert shards.row_count == 2
        assert [shards.get_row_at(i)[1:3] for i in range(2)] == [["succeeded", "2/2"],
                                                                 ["succeeded", "1/1"]]
    # the run's lines came from the form through the core: every flag applied, seeds resolved
    (lines,) = deployment.submitted
    assert [line["prompt"] for line in lines] == PROMPTS
    assert all((line["steps"], line["width"], line["height"]) == (2, 64, 64) for line in lines)
    assert all(isinstance(line["seed"], int) for line in lines)
    saved = read_index(isolated_dirs / "outputs")
    assert [r["params"]["prompt"] for r in saved] == PROMPTS
    assert read_metadata(isolated_dirs / "outputs" / saved[0]["file"])["params"]["steps"] == 2


@pytest.mark.asyncio
async def test_cancel_from_the_run_screen_keeps_the_finished_images(tiny_model, isolated_dirs
                                                                     ) -> None:
    prompts = isolated_dirs / "prompts.txt"
    prompts.write_text("\n".join(f"prompt {i}" for i in range(6)) + "\n")
    gate = threading.Semaphore(0)
    deployment = FakeBatchDeployment(gate=gate)
    app = batch_app(deployment, isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await fill(pilot, app, prompts, tiny_model)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        gate.release(2)  # two images land, then the run hangs until cancelled
        await until(pilot, lambda: len(app.screen.query_one(Gallery).images) == 2)
        await pilot.press("ctrl+x")
        await until(pilot, lambda: "cancelled" in text_of(app, "#run-summary"))
        assert deployment.cancelled.is_set()
        assert "2/6 images" in text_of(app, "#run-summary")
        assert len(read_index(isolated_dirs / "outputs")) == 2
        await pilot.press("ctrl+b")
        await until(pilot, lambda: isinstance(app.screen, DeployScreen))


@pytest.mark.asyncio
async def test_the_batch_form_remembers_its_prompt_file_and_gpus(tiny_model, isolated_dirs
                                                                 ) -> None:
    prompts = isolated_dirs / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    app = batch_app(FakeBatchDeployment(), isolated_dirs, tiny_model)
    async with app.run_test(size=SIZE) as pilot:
        await fill(pilot, app, prompts, tiny_model, gpus="3")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
    app = batch_app(FakeBatchDeployment(), isolated_dirs, tiny_model)  # a restart
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#choose-batch")
        screen = app.screen
        assert screen.query_one("#batch-prompt_file", Input).value == str(prompts)
        assert screen.query_one("#batch-gpus", Input).value == "3"
