"""LoRAs on SD 2.x and SDXL, in the key layouts kohya's sd-scripts writes for them (SDXL: the
original UNet's block names, `lora_te1_`/`lora_te2_`): applied for one request, gone from the
next, recorded in the params; a LoRA of another family refused naming the file."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from sdtui import protocol
from sdtui.devtools.tiny_lora import write_tiny_lora
from sdtui.worker.lora import LoraInvalid
from sdtui.worker.sampling import Sampler

FAST = {"steps": 2, "width": 64, "height": 64, "preview_every": 0, "seed": 5}


@pytest.fixture(scope="module")
def samplers(loaded_families, family_models):
    """A sampler per family's diffusers folder, with loras/ beside it: its own LoRA and SD 1.x's."""
    out = {}
    for family in ("sd2", "sdxl"):
        folder = family_models[family]["diffusers"]
        write_tiny_lora(folder, folder.parent / "loras" / "own.safetensors", seed=3)
        write_tiny_lora(family_models["sd1"]["diffusers"],
                        folder.parent / "loras" / "sd1-style.safetensors", seed=4)
        out[family] = Sampler(loaded_families[family]["diffusers"])
    return out


_PLAIN: dict[int, np.ndarray] = {}


def plain(sampler: Sampler) -> np.ndarray:
    """The image without a LoRA, made once per model: the first request's."""
    if id(sampler) not in _PLAIN:
        _PLAIN[id(sampler)] = generate(sampler, "a lighthouse at dusk")[0]
    return _PLAIN[id(sampler)]


def generate(sampler: Sampler, prompt: str) -> tuple[np.ndarray, dict]:
    from io import BytesIO

    from PIL import Image

    events: list[tuple[str, dict]] = []
    req = protocol.request("generate", id="t", prompt=prompt, **FAST)
    sampler.run(req, lambda kind, fields: events.append((kind, fields)), threading.Event())
    (fields,) = [fields for kind, fields in events if kind == "image"]
    return np.asarray(Image.open(BytesIO(fields["png"]))), fields["params"]


def test_sdxl_lora_names_are_kohyas(family_models, tmp_path):
    from safetensors.torch import load_file

    path = write_tiny_lora(family_models["sdxl"]["diffusers"], tmp_path / "x.safetensors")
    layers = {key.split(".")[0] for key in load_file(path)}
    kinds = {re.sub(r"(_\d+)?_1_(transformer_blocks|proj_).*|_text_model_.*", "", layer)
             for layer in layers}
    assert kinds == {"lora_te1", "lora_te2", "lora_unet_input_blocks", "lora_unet_middle_block",
                     "lora_unet_output_blocks"}
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k" in layers


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_a_lora_changes_the_image_and_leaves_the_next_request_alone(samplers, family):
    sampler = samplers[family]
    before = plain(sampler)
    with_lora, params = generate(sampler, "<lora:own:0.8> a lighthouse at dusk")
    after, after_params = generate(sampler, "a lighthouse at dusk")
    assert np.abs(with_lora.astype(int) - before).mean() > 1
    assert np.array_equal(before, after)
    assert [(r["name"], r["weight"]) for r in params["loras"]] == [("own", 0.8)]
    assert params["family"] == family and "loras" not in after_params


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_weight_zero_is_no_lora_on_every_text_encoder(samplers, family):
    """<lora:NAME:TE:UNET> with both weights 0 is the plain image: the text-encoder weight
    reaches SDXL's second text encoder too."""
    sampler = samplers[family]
    zero, _ = generate(sampler, "<lora:own:0:0> a lighthouse at dusk")
    assert np.array_equal(plain(sampler), zero)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_an_sd1_lora_is_refused_naming_the_file_and_families(samplers, family):
    label = {"sd2": "SD 2.x", "sdxl": "SDXL"}[family]
    with pytest.raises(LoraInvalid, match=rf"loras/sd1-style.safetensors does not fit this "
                                          rf"{label} model: it was trained for SD 1.x"):
        generate(samplers[family], "<lora:sd1-style:1> a lighthouse at dusk")
    assert np.array_equal(generate(samplers[family], "a lighthouse at dusk")[0],
                          plain(samplers[family]))  # and carries on
