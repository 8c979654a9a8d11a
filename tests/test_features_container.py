"""Issue 6 features through the real worker container with the tiny SD model over a volume:
img2img from a client-sent image, variations, weighted prompts, and the GFPGAN weights error."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sdtui.client import decode_png
from sdtui.errors import GenerationError
from sdtui.modelfiles import model_files
from tests.test_worker_container import model_volume, start_worker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAST = {"steps": 4, "width": 64, "height": 64, "preview_every": 0, "seed": 3}


@pytest.fixture(scope="module")
def volume(docker_client, worker_image, tiny_models):
    with model_volume(docker_client, worker_image, model_files(tiny_models["ckpt"])) as name:
        yield name


def pixels(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(decode_png(event))).convert("RGB"), dtype=int)


def test_features_in_the_container(docker_client, worker_image, volume, tiny_models):
    container, client = start_worker(docker_client, worker_image, volume,
                                     tiny_models["ckpt"].name)
    try:
        buf = io.BytesIO()
        Image.fromarray(skimage.data.astronaut()).save(buf, format="JPEG")
        init = base64.b64encode(buf.getvalue()).decode()

        def image(**params):
            events = list(client.generate(prompt="a cat:0.3 a dog:0.7", **{**FAST, **params}))
            return next(e for e in events if e["type"] == "image")

        same = image(init_image=init, strength=0.0, fit="crop")
        expected = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((64, 64),
                                                                                Image.LANCZOS)
        assert np.abs(pixels(same) - np.asarray(expected, dtype=int)).max() <= 1

        varied = image(variation_amount=0.5, variation_seed=9, count=1)
        assert varied["params"]["variation_seed"] == 9 and varied["seed"] == 3
        again = image(variation_amount=0.5, variation_seed=9, count=1)
        assert np.array_equal(pixels(varied), pixels(again))

        with pytest.raises(GenerationError, match=r"/data/GFPGANv1\.3\.pth"):
            image(gfpgan=0.5)
    finally:
        client.close()
        container.remove(force=True)


def test_face_restoration_and_upscaling_in_the_container(docker_client, worker_image, tiny_models,
                                                          tmp_path):
    from sdtui.devtools.esrgan_weights import write_esrgan_weights
    from sdtui.devtools.gfpgan_weights import write_gfpgan_weights

    weights = [write_gfpgan_weights(tmp_path / "GFPGANv1.3.pth"),
               write_esrgan_weights(tmp_path / "RealESRGAN_x2plus.pth", scale=2, blocks=2)]
    files = list(model_files(tiny_models["ckpt"])) + [(w, w.name) for w in weights]
    with model_volume(docker_client, worker_image, files) as name:
        container, client = start_worker(docker_client, worker_image, name,
                                         tiny_models["ckpt"].name)
        try:
            events = list(client.generate(prompt="a portrait", gfpgan=0.5, upscale=2,
                                          upscale_strength=1.0, **FAST))
            image = next(e for e in events if e["type"] == "image")
            assert Image.open(io.BytesIO(decode_png(image))).size == (128, 128)
            assert image["params"]["gfpgan"] == 0.5 and image["params"]["upscale"] == 2
        finally:
            client.close()
