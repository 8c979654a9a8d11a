"""`sdtui serve` on Option B driven by clients we did not write: `webuiapi` (the A1111 client on
the package index), and the exact calls Open WebUI and SillyTavern make, replayed from their
source. Every answer of every route validates against A1111's own pydantic models
(tests/vendor/a1111_api/models.py), and every image answered is in the outputs and
index.jsonl once. One deployment (the tiny model, a LoRA beside it, Real-ESRGAN ×2 weights)
and one server serve the whole module."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
import webuiapi
from a1111_models import models, valid
from local_cli import FAST, throwaway_cli, wait_for
from PIL import Image
from test_serve_local import AUTH, Server

from sdtui.metadata.png_chunks import read_texts
from sdtui.modelfiles import model_files
from sdtui.outputs import read_index
from tests.vendor.a1111_infotext import parse_generation_parameters

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SIZE = {"width": 64, "height": 64, "steps": 4}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_models) -> Path:
    from sdtui.devtools.esrgan_weights import write_esrgan_weights
    from sdtui.devtools.tiny_lora import write_tiny_lora

    folder = tmp_path_factory.mktemp("clients-models")
    for source, name in model_files(tiny_models["ckpt"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / name)
    write_tiny_lora(tiny_models["diffusers"], folder / "loras" / "style.safetensors")
    write_esrgan_weights(folder / "RealESRGAN_x2plus.pth", scale=2, blocks=2)
    return folder


@pytest.fixture(scope="module")
def cli(tmp_path_factory, worker_image, docker_client, models_dir):
    with throwaway_cli(tmp_path_factory.mktemp("clients"), docker_client) as c:
        r = c.run("--model", str(models_dir / "tiny.ckpt"), "--model",
                  str(models_dir / "RealESRGAN_x2plus.pth"), "--prompt", "first", *FAST)
        assert r.returncode == 0, r.stderr
        yield c


@pytest.fixture(scope="module")
def server(cli):
    s = Server(cli, "--api-auth", ":".join(AUTH))
    yield s
    s.stop()


@pytest.fixture
def api(server) -> webuiapi.WebUIApi:
    host, port = server.url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=4,
                             username=AUTH[0], password=AUTH[1])


def saved_once(out: Path, png: bytes) -> dict:
    """The index line of the one saved file holding exactly these bytes."""
    lines = [line for line in read_index(out) if (out / line["file"]).read_bytes() == png]
    assert len(lines) == 1, f"{len(lines)} saved copies"
    keys = Counter((line["request"], line["index"]) for line in read_index(out))
    assert keys[(lines[0]["request"], lines[0]["index"])] == 1
    return lines[0]


def png_of(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --- webuiapi --------------------------------------------------------------------------------

def test_webuiapi_txt2img_answers_a1111s_model_and_saves_each_image(api, cli):
    result = api.txt2img(prompt="a lighthouse", seed=11, batch_size=2, **SIZE)
    valid(models.TextToImageResponse, result.json)
    assert [image.size for image in result.images] == [(64, 64)] * 2
    assert result.info["all_seeds"] == [11, 12]
    assert result.parameters["prompt"] == "a lighthouse"
    for b64, infotext in zip(result.json["images"], result.info["infotexts"], strict=True):
        png = base64.b64decode(b64)
        assert read_texts(png, ["parameters"])[0]["parameters"] == infotext
        assert parse_generation_parameters(infotext)["Prompt"] == "a lighthouse"
        assert saved_once(cli.out, png)["deployment"] == cli.name


def test_webuiapi_img2img_with_a_mask_keeps_what_the_mask_leaves(api, cli):
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = api.img2img(images=[init], mask_image=mask, prompt="a window", seed=5,
                         denoising_strength=1.0, **SIZE)
    valid(models.ImageToImageResponse, result.json)
    info = result.info
    assert info["denoising_strength"] == 1.0
    assert parse_generation_parameters(info["infotexts"][0])["Denoising strength"] == "1"
    (image,) = result.images
    pixels = image.convert("RGB")
    # outside the mask the init image is kept; inside it the picture was redrawn
    assert all(pixels.getpixel((x, y)) == (200, 40, 40) for x, y in [(0, 0), (63, 63), (8, 40)])
    assert pixels.getpixel((32, 32)) != (200, 40, 40)
    line = saved_once(cli.out, base64.b64decode(result.json["images"][0]))
    assert line["params"]["mask"] and line["params"]["strength"] == 1.0


def test_webuiapi_polls_progress_and_interrupts_mid_batch(api, server, cli):
    # 30 steps an image, a preview every 10: the test acts between the first image and the
    # last, a window of a whole image's steps.
    api.set_options({"show_progress_every_n_steps": 10})
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(r=api.txt2img(
        prompt="interrupted by webuiapi", batch_size=3, steps=30, width=64, height=64)))
    seen: list[dict] = []
    try:
        worker.start()

        def first_image_done_and_previewed() -> bool:
            progress = api.get_progress()
            valid(models.ProgressResponse, progress)
            if progress["current_image"]:
                seen.append(progress)
            return (bool(seen) and progress["state"]["job_no"] >= 1) or not worker.is_alive()

        wait_for(first_image_done_and_previewed, unless=lambda: False, timeout=1800)
        assert api.interrupt() == {}  # A1111 answers an empty object
        worker.join(timeout=1800)
    finally:
        api.set_options({"show_progress_every_n_steps": 0})
        if worker.is_alive():  # leave the queue empty for the next test whatever happened
            api.interrupt()
            worker.join(timeout=1800)
    assert seen and base64.b64decode(seen[-1]["current_image"]).startswith(b"\x89PNG")
    assert seen[-1]["state"]["job_count"] == 3 and 0 < seen[-1]["progress"] <= 1
    answer = result["r"]
    valid(models.TextToImageResponse, answer.json)
    assert answer.info["interrupted"] is True and 1 <= len(answer.images) < 3
    for b64 in answer.json["images"]:
        saved_once(cli.out, base64.b64decode(b64))
    assert len([line for line in read_index(cli.out)
                if line["params"]["prompt"] == "interrupted by webuiapi"]) == len(answer.images)
    idle = api.get_progress()
    assert idle["state"]["job_count"] == 0 and idle["progress"] == 0


def test_webuiapi_options_models_samplers_and_png_info(api):
    valid(models.OptionsModel, api.get_options())
    (model,) = valid(models.SDModelItem, api.get_sd_models())
    assert api.util_get_current_model() == model.title
    api.util_set_model("tiny")  # the closest title, set through POST /options
    assert api.util_get_current_model() == model.title
    valid(models.SamplerItem, api.get_samplers())
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= set(api.util_get_sampler_names())
    valid(models.SchedulerItem, api.get_schedulers())
    assert "automatic" in api.util_get_scheduler_names()
    # No VAE file to swap in: the model's own VAE, which A1111 calls Automatic (or None).
    assert valid(models.SDVaeItem, api.get_sd_vae()) == []
    assert api.get_options()["sd_vae"] == "Automatic"
    assert api.set_options({"sd_vae": "None"}) == {"warnings": []}
    assert api.set_options({"sd_vae": "vae-ft-mse.safetensors"})["detail"][0]["loc"] == [
        "body", "sd_vae"]
    result = api.txt2img(prompt="a kite", seed=3, negative_prompt="rain", **SIZE)
    info = api.png_info(result.image)
    valid(models.PNGInfoResponse, info.json)
    assert info.json["info"] == result.info["infotexts"][0]
    assert info.json["parameters"]["Seed"] == "3"
    assert info.json["parameters"]["Negative prompt"] == "rain"


def test_loras_and_upscalers_list_what_the_deployment_has(api, cli):
    loras = api.get_loras()
    assert isinstance(loras, list), loras  # not A1111's 404 answer
    assert loras == [{"name": "style", "alias": "tiny-lora",
                      "path": "/data/loras/style.safetensors", "metadata": loras[0]["metadata"]}]
    assert loras[0]["metadata"]["ss_network_dim"] == "4"  # the file's own header
    upscalers = valid(models.UpscalerItem, api.get_upscalers())
    assert [(u.name, u.model_path, u.scale) for u in upscalers] == [
        ("None", None, 4), ("R-ESRGAN 2x+", "/data/RealESRGAN_x2plus.pth", 2)]
    assert valid(models.LatentUpscalerModeItem, api.get_latent_upscale_modes()) == []
    # the name listed is the one a prompt uses
    result = api.txt2img(prompt=f"a fox <lora:{loras[0]['name']}:0.8>", seed=4, **SIZE)
    line = saved_once(cli.out, base64.b64decode(result.json["images"][0]))
    assert [lora["name"] for lora in line["params"]["loras"]] == ["style"]
    assert "Lora hashes" in result.info["infotexts"][0]


# --- Open WebUI ------------------------------------------------------------------------------

def test_open_webui_automatic1111_calls_work_end_to_end(server, cli):
    """Open WebUI's calls, as backend/open_webui/routers/images.py of open-webui/open-webui
    makes them (the code index's copy at commit 02530d501461ce58ab06231d7c2ef2024a141ddf):
    `get_automatic1111_api_auth` (an `authorization: Basic base64(USER:PASS)` header),
    `verify_url`, `get_models`, `set_image_model` (GET /options; where the model differs,
    POST the whole options dict back with `sd_model_checkpoint` set) and the automatic1111
    branch of `image_generations` (a body of prompt, batch_size, width, height, steps,
    negative_prompt; each of `res['images']` base64-decoded by `get_image_data`)."""
    base = server.url
    headers = {"authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()}

    requests.get(f"{base}/sdapi/v1/options", headers=headers, timeout=60).raise_for_status()

    sd_models = requests.get(f"{base}/sdapi/v1/sd-models", headers=headers, timeout=60).json()
    valid(models.SDModelItem, sd_models)
    listed = [{"id": m["title"], "name": m["model_name"]} for m in sd_models]

    def set_image_model(model: str) -> None:
        options = requests.get(f"{base}/sdapi/v1/options", headers=headers, timeout=60).json()
        valid(models.OptionsModel, options)
        if model != options["sd_model_checkpoint"]:
            options["sd_model_checkpoint"] = model
            r = requests.post(f"{base}/sdapi/v1/options", json=options, headers=headers,
                              timeout=60)
            r.raise_for_status()

    set_image_model(listed[0]["id"])
    set_image_model("tiny.ckpt")  # an id saved before the model's hash was known

    data = {"prompt": "a harbour at dawn", "batch_size": 2, "width": 64, "height": 64,
            "steps": 4, "negative_prompt": "fog"}
    r = requests.post(f"{base}/sdapi/v1/txt2img", json=data, headers=headers, timeout=600)
    res = r.json()
    valid(models.TextToImageResponse, res)
    assert len(res["images"]) == 2
    for image in res["images"]:
        png = base64.b64decode(image)  # get_image_data: no "," so image/png
        assert Image.open(io.BytesIO(png)).size == (64, 64)
        line = saved_once(cli.out, png)
        assert line["params"]["negative_prompt"] == "fog"
    assert json.loads(res["info"])["all_prompts"] == ["a harbour at dawn"] * 2


# --- SillyTavern -----------------------------------------------------------------------------

def test_sillytavern_auto_calls_work_end_to_end(server, cli):
    """SillyTavern's calls for its "Stable Diffusion Web UI (AUTOMATIC1111)" source, as
    src/endpoints/stable-diffusion.js of SillyTavern/SillyTavern makes them (commit
    ba6f7b7a98cf7a5eaf4f0e81da9779a9a668ced4): /ping, /upscalers (with
    /latent-upscale-modes), /samplers, /schedulers, /models, /get-model, /set-model (then
    /progress until idle) and /generate, whose body is `generateAutoImage`'s in
    public/scripts/extensions/stable-diffusion/index.js (the extension's default settings, at
    64² and 4 steps; `url` and `auth` travel in the body; an unset seed and VAE are left out as
    JSON.stringify leaves undefined out). Its default scheduler, "normal", is A1111's Normal,
    which A1111 does not apply to DDIM (its default sampler): ignored, and said in the warnings;
    then the request is sent again with the first scheduler /schedulers offers, as a user picks
    it."""
    base = server.url
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()}

    def get(route: str):
        r = requests.get(f"{base}/sdapi/v1/{route}", headers=headers, timeout=60)
        assert r.ok, (route, r.status_code, r.text)
        return r.json()

    get("options")  # /ping
    upscalers = [x["name"] for x in get("upscalers")]
    upscalers[1:1] = [x["name"] for x in get("latent-upscale-modes")]
    assert upscalers == ["None", "R-ESRGAN 2x+"]
    assert "DDIM" in [x["name"] for x in get("samplers")]
    schedulers = [x["name"] for x in get("schedulers")]
    title = [x["title"] for x in get("sd-models")][0]
    assert get("options")["sd_model_checkpoint"] == title  # /get-model

    r = requests.post(f"{base}/sdapi/v1/options", data=json.dumps({"sd_model_checkpoint": title}),
                      headers={"Content-Type": "application/json", **headers}, timeout=60)
    assert r.ok  # /set-model, then waits for the model to load:
    progress = get("progress")
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0

    body = {"url": base, "auth": ":".join(AUTH), "prompt": "a tavern sign",
            "negative_prompt": "blurry", "sampler_name": "DDIM", "scheduler": "normal",
            "steps": 4, "cfg_scale": 7, "width": 64, "height": 64, "restore_faces": False,
            "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
            "denoising_strength": 0.7, "hr_second_pass_steps": 0,
            "override_settings": {"CLIP_stop_at_last_layers": 1},
            "override_settings_restore_afterwards": True, "clip_skip": 1, "save_images": True,
            "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False}

    def generate(body: dict) -> requests.Response:
        return requests.post(f"{base}/sdapi/v1/txt2img", data=json.dumps(body), timeout=600,
                             headers={"Content-Type": "application/json", **headers})

    default = generate(body)
    assert default.ok, default.text
    assert "scheduler: A1111 runs DDIM on its own timesteps, whatever the schedule type; " \
        "'normal' ignored" in json.loads(default.json()["info"])["warnings"]
    assert "normal" in schedulers
    r = generate({**body, "scheduler": schedulers[0]})
    assert r.ok, r.text
    data = r.json()
    valid(models.TextToImageResponse, data)
    png = base64.b64decode(data["images"][0])  # { format: 'png', data: data.images[0] }
    assert Image.open(io.BytesIO(png)).format == "PNG"
    line = saved_once(cli.out, png)
    assert (line["params"]["prompt"], line["params"]["scheduler"]) == ("a tavern sign", "ddim")
    warnings = json.loads(data["info"])["warnings"]
    assert any(w.startswith("url: ") for w in warnings)  # told, not silently dropped
    assert any(w.startswith("override_settings.CLIP_stop_at_last_layers") for w in warnings)
