"""FLUX.1 images' A1111/Forge infotext: written as Forge writes a FLUX.1 image (Sampler Euler,
Schedule type Simple, CFG scale 1, Distilled CFG Scale for [dev], the Model hash), read right
by A1111's own parser (vendored), sd-prompt-reader and sd-parsers, and a Forge FLUX.1 PNG's
infotext re-runs on sdtui."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_prompt_reader.image_data_reader import ImageDataReader

from sdtui import protocol
from sdtui.metadata.a1111 import format_infotext
from sdtui.metadata.png_chunks import embed_text
from sdtui.metadata.reader import read_metadata, request_from_png
from sdtui.outputs import save_image
from tests.vendor.a1111_infotext import parse_generation_parameters

MODEL_SHA = "d5d1e2a8b0" + "7" * 54


def flux_params(guidance: float | None) -> dict[str, Any]:
    """An image event's params from the worker running FLUX.1 ([dev] with guidance)."""
    request = protocol.request("generate", id="r1", prompt="a lighthouse at dusk", seed=42,
                               width=896, height=1152, steps=25, scheduler="euler")
    del request["type"], request["id"]
    return {**request, "schedule": "simple", "cfg": 1.0, "guidance": guidance,
            "base_seed": 42, "index": 0, "model": "/data/flux1-dev", "model_sha256": MODEL_SHA,
            "model_format": "diffusers", "family": "flux1", "device": "cuda",
            "dtype": "bfloat16", "generator": "sdtui 0.1.0"}


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (30, 90, 150)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("flux-out")
    return {variant: (save_image(out, png(), params), params)
            for variant, params in (("dev", flux_params(3.5)), ("schnell", flux_params(None)))}


def test_the_settings_line_is_forges_for_flux_dev():
    line = format_infotext(flux_params(3.5)).splitlines()[-1]
    assert line == ("Steps: 25, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
                    "Distilled CFG Scale: 3.5, Seed: 42, Size: 896x1152, Model hash: d5d1e2a8b0, "
                    "Model: flux1-dev, Family: flux1")


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_a1111_parses_a_flux_image(saved, variant):
    path, params = saved[variant]
    res = parse_generation_parameters(Image.open(path).text["parameters"])
    assert (res["Sampler"], res["Schedule type"]) == ("Euler", "Simple")
    assert float(res["CFG scale"]) == 1.0 and res["Model hash"] == MODEL_SHA[:10]
    assert res["Family"] == "flux1"
    if variant == "dev":
        assert float(res["Distilled CFG Scale"]) == 3.5
    else:
        assert "Distilled CFG Scale" not in res  # [schnell] takes no guidance


def test_sd_prompt_reader_and_sd_parsers_read_a_flux_image(saved):
    path, params = saved["dev"]
    reader = ImageDataReader(str(path))
    assert reader.tool == "A1111 webUI" and reader.status.name == "READ_SUCCESS"
    assert reader.positive == params["prompt"] and reader.parameter["sampler"] == "Euler"
    assert float(reader.parameter["cfg"]) == 1.0 and reader.parameter["model"] == "flux1-dev"
    info = ParserManager().parse(str(path))
    assert info is not None and " ".join(p.value for p in info.prompts) == params["prompt"]
    assert {s.name for s in info.samplers} == {"Euler"}


def test_sdtui_reruns_its_own_flux_image_exactly(saved):
    for path, params in saved.values():
        request, warnings = request_from_png(path, set())
        expected = {k: v for k, v in params.items() if k in protocol.GENERATE_FIELDS}
        assert request == {**expected, "count": 1} and warnings == []


# A FLUX.1 [dev] image's parameters as Forge writes them (the line public metadata readers'
# test data carries for Forge f2.0.1).
FORGE_FLUX = ("portrait of a woman in a yellow raincoat, city street at night, neon reflections\n"
              "Steps: 25, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG "
              "Scale: 3.5, Seed: 42, Size: 896x1152, Model hash: d5d1e2a8b0, Model: "
              "flux1-dev-Q8_0, Version: f2.0.1v1.10.1-previous-313-g8a042934, Module 1: ae, "
              "Module 2: clip_l, Module 3: t5xxl_fp16")


def test_a_forge_flux_png_reruns_with_its_guidance_sampler_and_schedule(tmp_path):
    path = tmp_path / "forge.png"
    path.write_bytes(embed_text(png(), {"parameters": FORGE_FLUX}))
    found = read_metadata(path)
    got = found["params"]
    assert (got["scheduler"], got["schedule"]) == ("euler", "simple")
    assert (got["guidance"], got["cfg"], got["steps"]) == (3.5, 1.0, 25)
    assert found["unknown_sampler"] is None
    request, _ = request_from_png(path, set())
    assert protocol.model_refusal({"family": "flux1", "family_label": "FLUX.1",
                                   "guidance": "embedded", "sampling": "flow",
                                   "size_multiple": 16}, request) is None
