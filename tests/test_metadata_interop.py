"""Every kind of image sdtui writes, read back by the tools people read them with: A1111's own
parser (vendored), sd-prompt-reader and sd-parsers (from PyPI). Each field must come back as
written; a text-to-image has no denoising strength.

A1111-aware readers read the `parameters` chunk; the dream-aware readers are also given the
same file without it, which is how they see the `Dream` and `sd-metadata` chunks."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_prompt_reader.image_data_reader import ImageDataReader

from sdtui import protocol
from sdtui.metadata.png_chunks import SIGNATURE, TEXT_KINDS, chunks, embed_text, keyword_of
from sdtui.metadata.reader import read_metadata, request_from_png
from sdtui.outputs import save_image
from tests.vendor.a1111_infotext import parse_generation_parameters

MODEL_SHA = "a9263745" + "0123456789abcdef" * 3 + "01234567"


def png(width: int = 64, height: int = 48, color: tuple = (30, 90, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


INIT = png(32, 32, (200, 10, 10))


def worker_params(**fields: Any) -> dict[str, Any]:
    """The params an image event carries: the checked request plus what the worker adds."""
    request = protocol.request("generate", id="r1", **{"prompt": "a lighthouse at dusk",
                                                       "seed": 1234, "width": 512,
                                                       "height": 768, **fields})
    del request["type"], request["id"]
    request = protocol.with_model_defaults({}, request)  # as the worker fills them in
    return {**request, "base_seed": request["seed"], "index": 0,
            "model": "/data/sd-v1-4.ckpt", "model_sha256": MODEL_SHA, "model_format": "ckpt",
            "device": "cuda", "dtype": "float16", "generator": "sdtui 0.1.0"}


KINDS = {
    "txt2img": {"steps": 30, "cfg": 7.5},
    "negative": {"negative_prompt": "blurry, low quality", "scheduler": "k_lms"},
    "img2img": {"init_image": base64.b64encode(INIT).decode(), "strength": 0.6},
    "variations": {"variation_amount": 0.3, "variation_seed": 77, "scheduler": "ddim"},
    "faces_upscale": {"gfpgan": 0.8, "upscale": 2, "upscale_strength": 0.75},
    "full_upscale": {"upscale": 4, "upscale_strength": 1.0, "scheduler": "heun"},
    "weighted_karras": {"prompt": "a (red:1.3) fox in the snow", "scheduler": "dpmpp_2m",
                        "schedule": "karras", "negative_prompt": "(blurry:1.2)"},
    "blended": {"prompt": "a cat:0.3 a dog:0.7", "scheduler": "euler"},
}
A1111_SAMPLERS = {"euler_a": "Euler a", "lms": "LMS", "ddim": "DDIM", "dpmpp_2m": "DPM++ 2M",
                  "heun": "Heun", "euler": "Euler"}
DREAM_SAMPLERS = {"euler_a": "k_euler_a", "lms": "k_lms", "ddim": "ddim",
                  "dpmpp_2m": "k_dpmpp_2", "heun": "k_heun", "euler": "k_euler"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("out")
    images = {}
    for kind, fields in KINDS.items():
        params = worker_params(**fields)
        images[kind] = (save_image(out, png(), params), params)
    return images


def without(path: Path, keyword: str, tmp: Path) -> Path:
    """The same PNG with one text chunk dropped."""
    data = path.read_bytes()
    kept = [bytes(data[c.start:c.end]) for c in chunks(data)
            if not (c.kind in TEXT_KINDS and keyword_of(c) == keyword)]
    out = tmp / f"{path.stem}-no-{keyword}.png"
    out.write_bytes(SIGNATURE + b"".join(kept))
    return out


def number(text: Any) -> float:
    return float(text)


@pytest.mark.parametrize("kind", KINDS)
def test_a1111_parses_every_field(saved, kind):
    path, params = saved[kind]
    res = parse_generation_parameters(Image.open(path).text["parameters"])

    assert res["Prompt"] == params["prompt"]
    assert res["Negative prompt"] == params["negative_prompt"]
    assert int(res["Steps"]) == params["steps"]
    assert res["Sampler"] == A1111_SAMPLERS[params["scheduler"]]
    # Always written: A1111 1.10 re-runs a DPM++ 2M without it as Karras.
    assert res["Schedule type"] == {"default": "Uniform", "karras": "Karras"}[params["schedule"]]
    assert number(res["CFG scale"]) == params["cfg"]
    assert int(res["Seed"]) == params["seed"]
    assert (int(res["Size-1"]), int(res["Size-2"])) == (512, 768)
    assert res["Model hash"] == MODEL_SHA[:10]
    assert res["Model"] == "sd-v1-4"
    if params["init_image"]:
        assert number(res["Denoising strength"]) == params["strength"]
    else:
        assert "Denoising strength" not in res  # A1111 would switch on hires fix
    if params["variation_amount"]:
        assert int(res["Variation seed"]) == params["variation_seed"]
        assert number(res["Variation seed strength"]) == params["variation_amount"]
    else:
        assert "Variation seed" not in res and "Variation seed strength" not in res
    if params["gfpgan"]:
        assert res["Face restoration"] == "GFPGAN"
        assert number(res["GFPGAN visibility"]) == params["gfpgan"]
    else:
        assert "Face restoration" not in res
    if params["upscale"]:
        assert number(res["Postprocess upscale by"]) == params["upscale"]
        esrgan = f"R-ESRGAN {params['upscale']}x+"
        if params["upscale_strength"] < 1:
            assert res["Postprocess upscaler"] == "Lanczos"
            assert res["Postprocess upscaler 2"] == esrgan
            assert number(res["Postprocess upscaler 2 visibility"]) == params["upscale_strength"]
        else:
            assert res["Postprocess upscaler"] == esrgan
    else:
        assert not any(key.startswith("Postprocess") for key in res)


@pytest.mark.parametrize("kind", KINDS)
def test_sd_prompt_reader_reads_both_formats(saved, kind, tmp_path):
    path, params = saved[kind]
    a1111 = ImageDataReader(str(path))
    assert a1111.tool == "A1111 webUI" and a1111.status.name == "READ_SUCCESS"
    assert (a1111.positive, a1111.negative) == (params["prompt"], params["negative_prompt"])
    assert a1111.parameter["sampler"] == A1111_SAMPLERS[params["scheduler"]]
    assert a1111.parameter["model"] == "sd-v1-4"
    for reader in (a1111, ImageDataReader(str(without(path, "parameters", tmp_path)))):
        assert reader.status.name == "READ_SUCCESS"
        assert int(reader.parameter["seed"]) == params["seed"]
        assert int(reader.parameter["steps"]) == params["steps"]
        assert number(reader.parameter["cfg"]) == params["cfg"]
        assert reader.parameter["size"] == "512x768"

    dream = ImageDataReader(str(without(path, "parameters", tmp_path)))
    assert dream.tool == "InvokeAI"
    blend = kind == "blended"  # it shows only the first weighted part
    assert dream.positive == ("a cat" if blend else params["prompt"])
    assert dream.negative == params["negative_prompt"]
    assert dream.parameter["sampler"] == DREAM_SAMPLERS[params["scheduler"]]
    assert dream.parameter["model"] == "sd-v1-4"

    # The Dream chunk alone (what the dream tool's oldest files carry).
    only_dream = without(without(path, "parameters", tmp_path), "sd-metadata", tmp_path)
    command = ImageDataReader(str(only_dream))
    assert command.tool == "InvokeAI" and command.status.name == "READ_SUCCESS"
    assert (command.positive, command.negative) == (params["prompt"], params["negative_prompt"])
    assert command.parameter["sampler"] == DREAM_SAMPLERS[params["scheduler"]]
    assert int(command.parameter["seed"]) == params["seed"]
    assert int(command.parameter["steps"]) == params["steps"]
    assert command.parameter["size"] == "512x768"


def _prompts(info) -> tuple[str, str]:
    return (" ".join(p.value for p in info.prompts),
            " ".join(p.value for p in info.negative_prompts))


@pytest.mark.parametrize("kind", KINDS)
def test_sd_parsers_reads_both_formats(saved, kind, tmp_path):
    path, params = saved[kind]
    manager = ParserManager()

    a1111 = manager.parse(str(path))
    assert a1111.generator.name == "AUTOMATIC1111"
    (sampler,) = a1111.samplers
    assert sampler.name == A1111_SAMPLERS[params["scheduler"]]
    assert int(sampler.parameters["steps"]) == params["steps"]
    assert int(sampler.parameters["seed"]) == params["seed"]
    assert number(sampler.parameters["cfg_scale"]) == params["cfg"]
    assert sampler.parameters["scheduler"] in ("Uniform", "Karras")
    assert (sampler.model.name, sampler.model.hash) == ("sd-v1-4", MODEL_SHA[:10])
    assert _prompts(a1111) == (params["prompt"], params["negative_prompt"])
    assert a1111.metadata["Size"] == "512x768"
    assert ("Denoising strength" in a1111.metadata) == bool(params["init_image"])

    dream = manager.parse(str(without(path, "parameters", tmp_path)))
    assert dream.generator.name == "INVOKEAI"
    (sampler,) = dream.samplers
    assert sampler.name == DREAM_SAMPLERS[params["scheduler"]]
    assert int(sampler.parameters["steps"]) == params["steps"]
    assert int(sampler.parameters["seed"]) == params["seed"]
    assert number(sampler.parameters["cfg_scale"]) == params["cfg"]
    assert (sampler.model.name, sampler.model.hash) == ("sd-v1-4", MODEL_SHA)
    meta = dream.metadata
    assert (meta["width"], meta["height"]) == (512, 768)
    assert meta["type"] == ("img2img" if params["init_image"] else "txt2img")
    if kind == "blended":
        assert [(p.value, p.metadata["weight"]) for p in sampler.prompts] == [
            ("a cat", 0.3), ("a dog", 0.7)]
    else:
        assert _prompts(dream) == (params["prompt"], params["negative_prompt"])
    expected_variations = ([{"seed": params["variation_seed"],
                             "weight": params["variation_amount"]}]
                           if params["variation_amount"] else [])
    assert meta["variations"] == expected_variations
    post = meta["postprocessing"] or []
    assert ({"type": "gfpgan", "strength": params["gfpgan"]} in post) == bool(params["gfpgan"])
    if params["upscale"]:
        assert {"type": "esrgan", "scale": params["upscale"],
                "strength": params["upscale_strength"]} in post
    if params["init_image"]:
        assert meta["strength"] == params["strength"]
        assert meta["init_img"].startswith("inputs/")


@pytest.mark.parametrize("kind", KINDS)
def test_sdtui_reads_its_own_files_back_exactly(saved, kind):
    path, params = saved[kind]
    request, warnings = request_from_png(path, set())
    expected = {k: v for k, v in params.items() if k in protocol.GENERATE_FIELDS}
    assert request == {**expected, "count": 1}
    assert warnings == []


def without_own_key(path: Path, tmp: Path) -> Path:
    """The same PNG with sdtui's exact request taken out of sd-metadata."""
    meta = json.loads(Image.open(path).text["sd-metadata"])
    del meta["sdtui"]
    out = tmp / f"{path.stem}-foreign.png"
    out.write_bytes(embed_text(path.read_bytes(), {"sd-metadata": json.dumps(meta)}))
    return out


@pytest.mark.parametrize("drop", ["parameters", "sd-metadata"])
def test_each_format_alone_reruns_the_same_request(saved, drop, tmp_path):
    """Without sdtui's own key, the A1111 chunk and the dream chunks each carry the request."""
    fields = ["prompt", "negative_prompt", "steps", "cfg", "seed", "width", "height",
              "scheduler", "variation_seed", "variation_amount", "gfpgan", "upscale",
              "upscale_strength", "strength"]
    if drop == "sd-metadata":
        fields.append("schedule")  # A1111's Schedule type; the dream layout has none
    for kind in KINDS:
        path, params = saved[kind]
        foreign = without(without_own_key(path, tmp_path), drop, tmp_path)
        found = read_metadata(foreign)
        assert found["tool"] == ("A1111" if drop == "sd-metadata" else "InvokeAI 2.x")
        assert found["ignored"] == [] and found["unknown_sampler"] is None
        got = found["params"]
        for key in fields:
            unused = (key == "upscale_strength" and not params["upscale"]
                      or key == "strength" and not params["init_image"]
                      or key == "variation_seed" and not params["variation_amount"])
            if unused:
                continue
            assert got.get(key, protocol.GENERATE_FIELDS[key].default) == params[key], (
                kind, key)
