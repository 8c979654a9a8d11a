"""Issue 11's generation features through `sdtui --no-ui`, the real engine and the real worker
container: the deployment copies `loras/` beside the model into the volume, the worker image
has what the SDE samplers and LoRA loading need, and a LoRA the model cannot use exits 2."""

from __future__ import annotations

import numpy as np
import pytest
from local_cli import events, throwaway_cli
from PIL import Image

from sdtui.devtools.tiny_lora import write_tiny_lora
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.outputs import read_metadata
from tests.helpers_generation import INIT, MASK

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAST = ["--steps", "3", "--width", "64", "--height", "64", "--seed", "9", "--json"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory, worker_image, docker_client):
    with throwaway_cli(tmp_path_factory.mktemp("cli"), docker_client) as c:
        yield c


def test_lora_inpainting_and_an_sde_sampler_in_the_container(cli, tmp_path):
    model = write_tiny_model(tmp_path / "tiny.safetensors", "safetensors", seed=7)
    write_tiny_lora(write_tiny_model(tmp_path / "src", "diffusers", seed=7),
                    tmp_path / "loras" / "style.safetensors")
    INIT.save(tmp_path / "init.png")
    MASK.save(tmp_path / "mask.png")

    r = cli.run("--model", str(model), "--prompt", "a fox <lora:style:0.8>",
                "--scheduler", "DPM++ SDE Karras", "--init-image", str(tmp_path / "init.png"),
                "--mask", str(tmp_path / "mask.png"), "--strength", "1", *FAST)
    assert r.returncode == 0, r.stderr
    (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
    params = read_metadata(saved)["params"]
    assert [lora["name"] for lora in params["loras"]] == ["style"]
    assert (params["scheduler"], params["schedule"]) == ("dpmpp_sde", "karras")
    repainted = np.asarray(Image.open(saved).convert("RGB"), dtype=int)
    assert (repainted[:16] == np.array(INIT.getpixel((0, 0)))).all()

    r = cli.run("--prompt", "a fox <lora:missing:1>", *FAST)
    assert r.returncode == 2
    assert "loras/missing.safetensors" in r.stderr and len(r.stderr.strip().splitlines()) == 1
