"""Issue 6 features through the real worker process: img2img, variations, weighted and long
prompts, face restoration and upscaling after the decode, and re-runs from PNG metadata."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sdtui.cli import build_parser
from sdtui.client import WorkerClient, decode_png
from sdtui.devtools.esrgan_weights import write_esrgan_weights
from sdtui.devtools.gfpgan_weights import write_gfpgan_weights
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.errors import GenerationError
from sdtui.headless import generation_params, png_params
from sdtui.outputs import read_metadata, save_image
from tests.test_worker import WorkerProcess

FAST = {"steps": 4, "width": 64, "height": 64, "preview_every": 0}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Like the guide's /data: the model with GFPGANv1.3.pth and Real-ESRGAN beside it."""
    d = tmp_path_factory.mktemp("data")
    write_tiny_model(d / "tiny-sd", "diffusers", seed=7)
    write_esrgan_weights(d / "RealESRGAN_x2plus.pth", scale=2, blocks=2)
    write_esrgan_weights(d / "RealESRGAN_x4plus.pth", scale=4, blocks=2)
    write_gfpgan_weights(d / "GFPGANv1.3.pth")
    return d


class NotingWorker(WorkerProcess):
    """The worker process with its `log` events (notes such as "no face found") collected."""

    def __init__(self, model) -> None:
        self.notes: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdtui.worker", "--model", str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.client = WorkerClient.over_pipes(self.proc.stdout, self.proc.stdin,
                                              on_log=lambda ev: self.notes.append(ev["message"]))


@pytest.fixture(scope="module")
def worker(data_dir):
    w = NotingWorker(data_dir / "tiny-sd")
    w.client.wait_ready(timeout=300)
    yield w
    w.stop()


def run(client, **params):
    return list(client.generate(**{"prompt": "a red fox", "seed": 11, **FAST, **params}))


def images_of(events):
    return [e for e in events if e["type"] == "image"]


def pixels(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(decode_png(event))).convert("RGB"), dtype=int)


def b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


ASTRONAUT = Image.fromarray(skimage.data.astronaut())


def test_img2img_strength_zero_returns_the_init_image(worker):
    (image,) = images_of(run(worker.client, init_image=b64_png(ASTRONAUT), strength=0.0))
    expected = np.asarray(ASTRONAUT.resize((64, 64), Image.LANCZOS), dtype=int)
    assert np.abs(pixels(image) - expected).max() <= 1
    assert image["params"]["fit"] == "resize" and image["params"]["strength"] == 0.0


def test_img2img_crops_to_the_size_and_samples_only_the_strengths_share(worker):
    events = run(worker.client, init_image=b64_png(ASTRONAUT), strength=0.5, fit="crop",
                 width=64, height=128)
    (image,) = images_of(events)
    assert pixels(image).shape == (128, 64, 3) and image["params"]["fit"] == "crop"
    totals = {e["total"] for e in events if e["type"] == "progress"}
    assert totals == {2}  # 4 steps at strength 0.5


def test_variations_keep_the_seed_and_record_both_seeds(worker):
    plain = images_of(run(worker.client, count=1))[0]
    varied = images_of(run(worker.client, count=2, variation_amount=0.2, variation_seed=5))
    assert [e["seed"] for e in varied] == [11, 11]
    assert [e["params"]["variation_seed"] for e in varied] == [5, 6]
    assert not np.array_equal(pixels(varied[0]), pixels(varied[1]))
    assert not np.array_equal(pixels(plain), pixels(varied[0]))


def test_weighted_and_long_prompts_generate(worker):
    blend = images_of(run(worker.client, prompt="a cat:0.3 a dog:0.7"))[0]
    weighted = images_of(run(worker.client, prompt="a (red:1.4) fox"))[0]
    plain = images_of(run(worker.client, prompt="a red fox"))[0]
    assert not np.array_equal(pixels(weighted), pixels(plain))
    assert not np.array_equal(pixels(blend), pixels(plain))
    long_prompt = ", ".join(["a red fox in a snowy forest at dusk"] * 20)  # ~200 tokens
    assert len(images_of(run(worker.client, prompt=long_prompt))) == 1


def test_upscale_and_face_restoration_run_after_the_decode(worker):
    worker.notes.clear()
    (image,) = images_of(run(worker.client, upscale=4, upscale_strength=0.5, gfpgan=0.8))
    assert pixels(image).shape == (256, 256, 3)
    assert any("no face found" in note for note in worker.notes)


def test_a_rerun_from_png_metadata_gives_identical_pixels(worker, tmp_path):
    events = run(worker.client, prompt="a cat:0.3 a dog:0.7", count=2, variation_amount=0.3,
                 upscale=2, init_image=None)
    second = images_of(events)[1]
    path = save_image(tmp_path, decode_png(second), second["params"])
    assert read_metadata(path)["params"]["variation_seed"] == second["params"]["variation_seed"]
    args = build_parser().parse_args(["--no-ui", "--from-png", str(path)])
    params = generation_params(args, None, png_params(path))
    (again,) = images_of(list(worker.client.generate(**params)))
    assert np.array_equal(pixels(again), pixels(second))


def test_missing_gfpgan_weights_fail_before_sampling_naming_the_file(tiny_diffusers):
    w = WorkerProcess(tiny_diffusers)
    try:
        w.client.wait_ready(timeout=300)
        with pytest.raises(GenerationError, match=r"GFPGANv1\.3\.pth"):
            list(w.client.generate(prompt="x", gfpgan=0.5, **FAST))
    finally:
        w.stop()


@pytest.mark.slow
def test_a_real_a1111_file_reruns_in_the_worker_with_its_values(worker):
    """An A1111 PNG (sd-parsers' fixture): its seed, steps, cfg and size reach the sampler; its
    UniPC sampler, which sdtui does not have, is replaced only because --scheduler says so."""
    path = Path(__file__).parent / "fixtures" / "metadata" / "automatic1111_cropped.png"
    args = build_parser().parse_args(["--no-ui", "--from-png", str(path), "--scheduler", "euler"])
    params = generation_params(args, None, png_params(path, args))
    (image,) = images_of(list(worker.client.generate(**params)))
    used = image["params"]
    assert (used["seed"], used["steps"], used["cfg"], used["width"], used["height"]) == (
        235284042, 15, 5.0, 512, 400)
    assert (used["prompt"], used["negative_prompt"], used["scheduler"]) == (
        "photo of a duck", "monochrome", "euler")
    assert Image.open(io.BytesIO(decode_png(image))).size == (512, 400)
