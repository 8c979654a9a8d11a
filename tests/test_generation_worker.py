"""Issue 11's generation features through the real worker process: every sampler and schedule
in the table, inpainting with a mask on a plain and on a 9-channel model, and LoRA files from
`loras/` beside the model; bad inputs get one line and the right code."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sdtui import samplers
from sdtui.devtools.tiny_lora import write_tiny_lora
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.errors import EXIT_BAD_INPUT, GenerationError, RequestRejected
from sdtui.protocol import ProtocolError
from tests.helpers_generation import (
    INIT,
    MASK,
    TRANSPARENT_MASK,
    b64_png,
    images_of,
    pixels,
    write_tiny_inpainting_model,
)
from tests.test_worker import WorkerProcess

FAST = {"steps": 3, "width": 64, "height": 64, "preview_every": 0, "seed": 5}
INIT_B64, MASK_B64 = b64_png(INIT), b64_png(MASK)
RED = np.array([200, 30, 30])
INSIDE = (slice(24, 40), slice(24, 40))


def write_other_family_lora(root, out):
    """A LoRA made for a model whose text encoder is 64 wide, as an SD 2.x LoRA is wider than
    an SD 1.x model's cross-attention (1024 vs 768); kohya's metadata says sd_v2."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdtui.devtools.tiny_lora import kohya_metadata, lora_state_dict
    from sdtui.devtools.tiny_model import TINY_TEXT, TINY_UNET

    model = write_tiny_model(root / "wide-sd", "diffusers", seed=3)
    unet = UNet2DConditionModel.from_config(
        {**UNet2DConditionModel.load_config(model, subfolder="unet"), **TINY_UNET,
         "cross_attention_dim": 64})
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(
        model / "text_encoder", **{**TINY_TEXT, "hidden_size": 64, "projection_dim": 64}))
    save_file(lora_state_dict(unet, text), out, metadata=kohya_metadata("sd2", 4, 4.0))
    return out


def write_sdxl_layout_lora(out):
    """Keys as kohya's sd-scripts names an SDXL LoRA (its sgm UNet's input_blocks, two text
    encoders lora_te1_/lora_te2_), with SDXL's widths and kohya's SDXL metadata."""
    import torch
    from safetensors.torch import save_file

    from sdtui.devtools.tiny_lora import kohya_metadata

    layers = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 640),
              "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
              "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280)}
    state = {}
    for name, (width_in, width_out) in layers.items():
        state[f"{name}.lora_down.weight"] = torch.zeros(4, width_in)
        state[f"{name}.lora_up.weight"] = torch.zeros(width_out, 4)
        state[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(state, out, metadata=kohya_metadata("sdxl", 4, 4.0))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Like the container's /data: the model, with its LoRAs in loras/ beside it."""
    d = tmp_path_factory.mktemp("data")
    write_tiny_model(d / "tiny-sd", "diffusers", seed=7)
    loras = d / "loras"
    write_tiny_lora(d / "tiny-sd", loras / "style.safetensors", seed=1)
    write_tiny_lora(d / "tiny-sd", loras / "detail.safetensors", seed=2)
    write_other_family_lora(tmp_path_factory.mktemp("wide"), loras / "sd2-style.safetensors")
    write_sdxl_layout_lora(loras / "xl-style.safetensors")
    (loras / "broken.safetensors").write_bytes((loras / "style.safetensors").read_bytes()[:500])
    import torch
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.out.2.weight": torch.zeros(2)},
              loras / "not-a-lora.safetensors")
    return d


@pytest.fixture(scope="module")
def worker(data_dir):
    w = WorkerProcess(data_dir / "tiny-sd")
    w.client.wait_ready(timeout=300)
    yield w
    w.stop()


def run(worker, **params):
    return images_of(list(worker.client.generate(**{"prompt": "a red fox", **FAST, **params})))


def image(worker, **params):
    (only,) = run(worker, **params)
    return only


# --- samplers ------------------------------------------------------------------------------

COMBINATIONS = [(s.id, schedule) for s in samplers.SAMPLERS.values()
                for schedule in (samplers.DEFAULT_SCHEDULE, *s.schedules)]


def test_every_sampler_and_schedule_runs_deterministically_and_differently(worker):
    """Each sampler runs once per schedule and its last schedule again: a schedule is a pure
    function of the step count, while the noise and any state a scheduler keeps between
    requests belong to the sampler."""
    seen: dict[bytes, tuple[str, str]] = {}
    for sampler, schedule in COMBINATIONS:
        # Three steps: with two, every schedule is [sigma_max, sigma_min, 0].
        first = image(worker, scheduler=sampler, schedule=schedule, steps=3)
        assert (first["params"]["scheduler"], first["params"]["schedule"]) == (sampler, schedule)
        assert 0 < pixels(first).mean() < 255, (sampler, schedule)  # not NaN-black or blank
        key = pixels(first).tobytes()
        if schedule == samplers.NORMAL:
            # A1111's Normal is its Uniform for these samplers (tests/test_schedules_a1111.py):
            # the sampler's own spacing, so its default's very image.
            assert seen.get(key) == (sampler, samplers.DEFAULT_SCHEDULE), (sampler, schedule)
            continue
        assert key not in seen, f"{(sampler, schedule)} drew the same image as {seen.get(key)}"
        seen[key] = (sampler, schedule)
    for spec in samplers.SAMPLERS.values():
        schedule = (samplers.DEFAULT_SCHEDULE, *spec.schedules)[-1]
        again = image(worker, scheduler=spec.id, schedule=schedule, steps=3)
        drawn = samplers.DEFAULT_SCHEDULE if schedule == samplers.NORMAL else schedule
        assert seen.get(pixels(again).tobytes()) == (spec.id, drawn), "not deterministic"


@pytest.mark.parametrize(("name", "schedule", "expected"), [
    ("DPM++ 2M Karras", None, ("dpmpp_2m", "karras")),
    ("DPM++ SDE Karras", None, ("dpmpp_sde", "karras")),
    ("DPM++ 2M SDE", "Automatic", ("dpmpp_2m_sde", "exponential")),
    ("Euler a", "Automatic", ("euler_a", "default")),
    ("UniPC", None, ("unipc", "default")),
])
def test_pasted_names_run_as_the_sampler_they_name(worker, name, schedule, expected):
    params = image(worker, scheduler=name, **({"schedule": schedule} if schedule else {}))
    assert (params["params"]["scheduler"], params["params"]["schedule"]) == expected


def raw_errors(model, requests: list[dict]) -> dict[str, tuple[str, str]]:
    """Send requests to a fresh worker as raw lines (past the client's own checks)."""
    stdin = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    proc = subprocess.run([sys.executable, "-m", "sdtui.worker", "--model", str(model)],
                          input=stdin, capture_output=True, timeout=600)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return {e["id"]: (e["code"], e["message"]) for e in events if e["type"] == "error"}


def test_samplers_diffusers_cannot_reproduce_are_refused_by_the_worker(data_dir):
    refused = ["DPM++ 2S a", "DPM++ 3M SDE Karras", "DPM adaptive", "k_dpm_fast"]
    errors = raw_errors(data_dir / "tiny-sd",
                        [{"type": "generate", "id": f"r{i}", "prompt": "p", "scheduler": name}
                         for i, name in enumerate(refused)]
                        + [{"type": "generate", "id": "s", "prompt": "p",
                            "schedule": "SGM Uniform"}])
    for i in range(len(refused)):
        code, message = errors[f"r{i}"]
        assert code == "bad_request" and "not supported" in message and "\n" not in message
    assert errors["s"][0] == "bad_request" and "'SGM Uniform' is not supported" in errors["s"][1]


# --- LoRA ----------------------------------------------------------------------------------


def test_a_lora_changes_the_image_and_leaves_the_next_request_untouched(worker):
    before = pixels(image(worker))
    styled = image(worker, prompt="a red fox <lora:style:0.9>")
    after = pixels(image(worker))
    assert np.array_equal(before, after)
    assert not np.array_equal(before, pixels(styled))
    (record,) = styled["params"]["loras"]
    assert record["name"] == "style" and record["weight"] == record["te_weight"] == 0.9
    assert len(record["sha256"]) == len(record["hash"]) == 12
    assert styled["params"]["prompt"] == "a red fox <lora:style:0.9>"  # recorded as written


def test_lora_tags_are_not_encoded_as_text(worker):
    # At weight 0 a LoRA adds nothing: only the tag's text could change the picture.
    plain = pixels(image(worker, prompt="a red fox"))
    tagged = pixels(image(worker, prompt="a red fox <lora:style:0>"))
    assert np.array_equal(plain, tagged)


def test_several_loras_apply_together_with_separate_weights(worker):
    style = pixels(image(worker, prompt="a fox <lora:style:1>"))
    detail = pixels(image(worker, prompt="a fox <lora:detail:1>"))
    both = image(worker, prompt="a fox <lora:style:1> <lora:detail:1>")
    assert not np.array_equal(pixels(both), style) and not np.array_equal(pixels(both), detail)
    assert [r["name"] for r in both["params"]["loras"]] == ["style", "detail"]
    unet_only = image(worker, prompt="a fox <lora:style:0:1>")
    assert unet_only["params"]["loras"][0]["te_weight"] == 0.0
    assert not np.array_equal(pixels(unet_only), style)


@pytest.mark.parametrize(("tag", "needle"), [
    ("<lora:nope:1>", "LoRA 'nope' not found: no loras/nope.safetensors beside the model"),
    ("<lora:sd2-style:1>", "loras/sd2-style.safetensors does not fit this SD 1.x model: it was "
                           "trained for SD 2.x"),
    ("<lora:xl-style:1>", "loras/xl-style.safetensors does not fit this SD 1.x model: it was "
                          "trained for SDXL"),
    ("<lora:broken:1>", "loras/broken.safetensors is not a valid .safetensors file"),
    ("<lora:not-a-lora:1>", "loras/not-a-lora.safetensors is not a LoRA"),
])
def test_a_lora_the_model_cannot_use_is_one_bad_request_line(worker, tag, needle):
    before = pixels(image(worker))
    with pytest.raises(RequestRejected) as caught:
        run(worker, prompt=f"a fox {tag}")
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert np.array_equal(before, pixels(image(worker)))  # nothing half-applied


def test_lora_syntax_errors_are_caught_before_sending(worker):
    for prompt, needle in [("x <lora:../etc/passwd:1>", "must be a file name"),
                           ("x <lora:style:heavy>", "is not a number"),
                           ("x <lora:style:1> <lora:style:0.5>", "named twice"),
                           ("x <hypernet:h:1>", "hypernetworks are not supported")]:
        with pytest.raises(ProtocolError, match=needle):
            run(worker, prompt=prompt)
    with pytest.raises(ProtocolError, match="move it there"):
        run(worker, negative_prompt="<lora:style:1>")


# --- inpainting ----------------------------------------------------------------------------


def test_a_plain_model_repaints_only_the_masked_part(worker):
    repainted = pixels(image(worker, init_image=INIT_B64, mask=MASK_B64, strength=1.0))
    outside = np.ones(repainted.shape[:2], bool)
    outside[16:48, 16:48] = False
    assert (repainted[outside] == RED).all()  # the init image's own pixels
    assert np.abs(repainted[INSIDE] - RED).mean() > 20
    # The guide's -M kind of mask (transparent where it repaints) means the same.
    guide = pixels(image(worker, init_image=INIT_B64, mask=b64_png(TRANSPARENT_MASK),
                         strength=1.0))
    assert np.array_equal(guide, repainted)


def test_a_mask_needs_its_image_and_must_be_an_image(worker, tmp_path):
    with pytest.raises(ProtocolError, match="mask needs the image it masks"):
        run(worker, mask=MASK_B64)
    with pytest.raises(ProtocolError, match="mask is not a PNG or JPEG image"):
        run(worker, init_image=INIT_B64, mask=base64.b64encode(b"GIF89a...").decode())
    truncated = base64.b64encode(base64.b64decode(MASK_B64)[:40]).decode()
    with pytest.raises(RequestRejected, match="mask cannot be decoded"):
        run(worker, init_image=INIT_B64, mask=truncated)


@pytest.fixture(scope="module")
def inpainting_worker(tmp_path_factory):
    model = write_tiny_inpainting_model(tmp_path_factory.mktemp("inpaint") / "tiny-inpaint")
    w = WorkerProcess(model)
    w.client.wait_ready(timeout=300)
    yield w
    w.stop()


def test_ready_says_the_model_is_an_inpainting_checkpoint(inpainting_worker, worker):
    assert inpainting_worker.client.ready["inpainting"] is True
    assert inpainting_worker.client.ready["family"] == "sd1"
    assert worker.client.ready["inpainting"] is False


def test_an_inpainting_checkpoint_repaints_the_mask(inpainting_worker):
    first = pixels(image(inpainting_worker, init_image=INIT_B64, mask=MASK_B64, strength=1.0))
    again = pixels(image(inpainting_worker, init_image=INIT_B64, mask=MASK_B64, strength=1.0))
    assert np.array_equal(first, again)
    assert (first[:16] == RED).all() and np.abs(first[INSIDE] - RED).mean() > 20


def test_an_inpainting_checkpoint_without_a_mask_is_one_bad_request_line(inpainting_worker):
    for params in ({}, {"init_image": INIT_B64}):
        with pytest.raises(GenerationError) as caught:
            run(inpainting_worker, **params)
        message = str(caught.value)
        assert isinstance(caught.value, RequestRejected) and "\n" not in message
        assert "inpainting checkpoint" in message and "--mask" in message
    assert image(inpainting_worker, init_image=INIT_B64, mask=MASK_B64)  # and carries on


def test_a_session_refuses_what_the_model_cannot_run_before_sending_it(inpainting_worker,
                                                                       tmp_path, monkeypatch):
    """Both front ends run requests through a Session: it knows the model from `ready`."""
    from sdtui.session import Session

    sent = []
    send = inpainting_worker.client.generate
    monkeypatch.setattr(inpainting_worker.client, "generate",
                        lambda **request: sent.append(request) or send(**request))
    session = Session(inpainting_worker.client, tmp_path)
    with pytest.raises(RequestRejected, match="inpainting checkpoint.*--mask FILE"):
        session.generate({"prompt": "a red fox", **FAST, "init_image": INIT_B64})
    assert sent == [] and not list(tmp_path.iterdir())
    saved, _ = session.generate({"prompt": "a red fox", **FAST, "init_image": INIT_B64,
                                 "mask": MASK_B64})
    assert len(sent) == 1 and [image.path.exists() for image in saved] == [True]


def test_mask_images_decode_like_the_guide_and_a1111_read_them():
    from sdtui.worker.inpaint import decode_mask

    white = np.asarray(decode_mask(MASK_B64, 64, 64, "resize"))
    transparent = np.asarray(decode_mask(b64_png(TRANSPARENT_MASK), 64, 64, "resize"))
    assert np.array_equal(white, transparent)
    assert white[32, 32] == 255 and white[0, 0] == 0
    jpeg = np.asarray(decode_mask(b64_png(MASK.convert("RGB"), "JPEG"), 32, 32, "resize"))
    assert jpeg.shape == (32, 32) and jpeg[16, 16] > 200 and jpeg[0, 0] < 50
    opaque_rgba = Image.merge("RGBA", [MASK] * 3 + [Image.new("L", (64, 64), 255)])
    assert np.array_equal(np.asarray(decode_mask(b64_png(opaque_rgba), 64, 64, "resize")), white)
