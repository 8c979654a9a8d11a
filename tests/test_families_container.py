"""SD 2.x and SDXL, each in every format the family ships (SDXL: no .ckpt), load offline and
generate through the real worker container (SD 1.x's three formats:
tests/test_worker_container.py; an SDXL .ckpt takes the same path as SD 2.x's after reading)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from sdtui.client import decode_png
from sdtui.modelfiles import model_files
from tests.test_features_worker import ASTRONAUT, b64_png
from tests.test_worker_container import model_volume, start_worker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CASES = [("sd2", "diffusers"), ("sd2", "safetensors"), ("sd2", "ckpt"),
         ("sdxl", "diffusers"), ("sdxl", "safetensors")]
DEFAULT_SIZE = {"sd2": 768, "sdxl": 1024}


def test_every_family_and_format_generates_in_the_container(docker_client, worker_image,
                                                           family_models):
    files = [f for family, fmt in CASES for f in model_files(family_models[family][fmt])]
    with model_volume(docker_client, worker_image, files) as volume:
        # The workers load side by side; each then answers on its own attach socket.
        with ThreadPoolExecutor(len(CASES)) as pool:
            started = list(pool.map(
                lambda case: start_worker(docker_client, worker_image, volume,
                                          family_models[case[0]][case[1]].name), CASES))
        try:
            for (family, fmt), (_, client) in zip(CASES, started, strict=True):
                ready = client.ready
                assert (ready["family"], ready["format"], ready["inpainting"]) == (
                    family, fmt, False), ready
                assert ready["default_size"] == DEFAULT_SIZE[family] and ready["warnings"] == []
                events = list(client.generate(prompt="a tiny castle", seed=5, steps=3, width=64,
                                              height=96, preview_every=1))
                assert [e["step"] for e in events if e["type"] == "preview"] == [1, 2]
                image = next(e for e in events if e["type"] == "image")
                assert Image.open(io.BytesIO(decode_png(image))).size == (64, 96)
                assert image["params"]["family"] == family
            # No size: the model's own (strength 0 returns the init image, so this is cheap).
            _, sdxl = started[CASES.index(("sdxl", "safetensors"))]
            events = list(sdxl.generate(prompt="x", init_image=b64_png(ASTRONAUT), strength=0.0,
                                        preview_every=0))
            image = next(e for e in events if e["type"] == "image")
            assert (image["params"]["width"], image["params"]["height"]) == (1024, 1024)
            assert Image.open(io.BytesIO(decode_png(image))).size == (1024, 1024)
        finally:
            for container, client in started:
                client.close()
                container.remove(force=True)
