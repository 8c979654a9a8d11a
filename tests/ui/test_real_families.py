"""The app with FLUX.1, SD 3.5 and FLUX.2 [klein] on the real Option B (the real Docker engine,
the worker image, the real worker container), driven with the Pilot: the user types a FLUX.1
[dev] GGUF transformer's path into “Model files” (its siblings complete the set), the prompt
form follows the real worker's `ready`, then the same app switches the deployment to an SD 3.5
folder and to a Klein folder, and a teardown leaves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from textual.widgets import Checkbox, Input, Label, TextArea

from sdtui.ledger import Ledger
from sdtui.outputs import read_metadata
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen
from sdtui.ui.screens.teardown import TeardownModal
from sdtui.ui.widgets.gallery import Gallery

from .conftest import given
from .test_flows import SIZE, steps_ended, text_of, until
from .test_real_local import BASE, SLOW_S, labelled, throwaway_deployment

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FORM_FIELDS = ("cfg", "guidance", "negative_prompt")


@pytest.fixture
def deployment_name(docker_client: docker.DockerClient, worker_image: str) -> Iterator[str]:
    yield from throwaway_deployment(docker_client, "ui-fam")


@pytest.fixture(scope="module")
def flux_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FLUX.1 [dev] split set as ComfyUI users keep it, its transformer a Q8_0 GGUF
    (flux1-dev.gguf beside clip_l, t5xxl_fp16 and ae): the transformer file's path."""
    from tests.test_flux_formats import references, write_set

    return write_set(tmp_path_factory.mktemp("ui-flux") / "flux1-dev", "dev",
                     references("dev"), transformer="gguf")


def shown(screen: PromptScreen) -> dict[str, bool]:
    """Which of the guidance fields the form shows (in the layout, not only displayable)."""
    return {name: screen.query_one(f"#{name}").display
            and screen.query_one(f"#{name}").region.height > 0 for name in FORM_FIELDS}


async def switch_model(app: SdtuiApp, pilot: object, model: Path) -> PromptScreen:
    """As a user switches: ctrl+b to the deployments, the new model in “Model files”, ctrl+s;
    the prompt panel that opens on the new worker."""
    before = app.screen
    await pilot.press("ctrl+b")  # type: ignore[attr-defined]
    await until(pilot, lambda: isinstance(app.screen, DeployScreen))
    app.screen.query_one("#local-models", Input).value = str(model)
    await pilot.press("ctrl+s")  # type: ignore[attr-defined]
    await until(pilot, lambda: isinstance(app.screen, PromptScreen) and app.screen is not before,
                timeout=SLOW_S)
    return app.screen  # type: ignore[return-value]


async def generate(app: SdtuiApp, pilot: object, prompt: str, **fields: str) -> dict:
    """One 64×64 2-step image with the form's fields as typed; its saved params."""
    screen = app.screen
    screen.query_one("#prompt", TextArea).text = prompt
    for name, value in {"steps": "2", "width": "64", "height": "64", **fields}.items():
        screen.query_one(f"#{name}", Input).value = value
    gallery = screen.query_one("#gallery", Gallery)
    before = len(gallery.images)
    await pilot.press("ctrl+g")  # type: ignore[attr-defined]
    await until(pilot, lambda: len(gallery.images) > before and not screen.generating,
                timeout=SLOW_S)
    assert "1 image(s) saved" in str(screen.query_one("#gen-status").render())
    image = gallery.images[-1]
    assert f"saved {image.path}" in text_of(app, "#saved-path")
    return read_metadata(image.path)["params"]


@pytest.mark.asyncio
async def test_flux_gguf_then_sd35_then_klein_in_the_app_on_option_b(
        deployment_name, flux_gguf, tiny_sd3, tiny_klein, isolated_dirs, docker_client) -> None:
    volume = f"sdtui-test-{deployment_name}"
    out = isolated_dirs / "outputs"
    app = SdtuiApp(Services(out_dir=out, serve_port=0, given=given(
        option="local", name=deployment_name, volume=volume, base_image=BASE)))
    async with app.run_test(size=SIZE) as pilot:
        # FLUX.1 [dev]: the GGUF transformer's path, typed into “Model files”.
        models = app.screen.query_one("#local-models", Input)
        models.value = str(flux_gguf)
        await pilot.pause()
        assert not models.has_class("-invalid"), text_of(app, "#local-models-error")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen))
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), timeout=SLOW_S)
        flux: PromptScreen = app.screen  # type: ignore[assignment]
        assert shown(flux) == {"cfg": False, "guidance": True, "negative_prompt": False}
        assert str(flux.query_one("#guidance").parent.query_one(Label).render()) == \
            "Distilled CFG"
        assert "FLUX.1: Distilled CFG in place of cfg" in text_of(app, "#family-note")
        params = await generate(app, pilot, "a red barn", guidance="2.5")
        assert (params["family"], params["guidance"], params["negative_prompt"]) == (
            "flux1", 2.5, ""), params

        # SD 3.5 Medium: the same deployment switched to its folder; cfg and the negative
        # prompt are back, Distilled CFG is gone (and not sent).
        sd3 = await switch_model(app, pilot, tiny_sd3["medium"])
        assert shown(sd3) == {"cfg": True, "guidance": False, "negative_prompt": True}
        assert not sd3.query_one("#family-note").display
        params = await generate(app, pilot, "a red barn", cfg="5", negative_prompt="blurry")
        assert (params["family"], params["cfg"], params["guidance"],
                params["negative_prompt"]) == ("sd3", 5.0, None, "blurry"), params

        # FLUX.2 [klein]: distilled, neither cfg nor guidance nor a negative prompt.
        klein = await switch_model(app, pilot, tiny_klein["distilled"])
        assert shown(klein) == {"cfg": False, "guidance": False, "negative_prompt": False}
        params = await generate(app, pilot, "a red barn")
        assert (params["family"], params["negative_prompt"]) == ("flux2-klein", ""), params
        gallery = klein.query_one("#gallery", Gallery)  # this deployment's, whatever the model
        assert [i.params["family"] for i in gallery.images] == ["flux1", "sd3", "flux2-klein"]

        # Teardown, the model volume too: nothing of the deployment is left.
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TeardownModal), timeout=120)
        app.screen.query_one("#purge", Checkbox).value = True
        await pilot.click("#confirm")
        await until(pilot, lambda: steps_ended(app, "teardown"), timeout=300)
    assert labelled(docker_client, deployment_name) == []
    assert docker_client.volumes.list(filters={"name": volume}) == []
    assert Ledger.load(deployment_name) is None
    assert len(list(out.glob("*.png"))) == 3  # the images are the user's: kept
