"""SD 3.5 images' A1111/Forge infotext: written as Forge writes an SD 3.5 image (Sampler Euler,
Schedule type Simple, the CFG scale that ran: 1 for Large Turbo) and naming the family, read
right by A1111's own parser (vendored), sd-prompt-reader and sd-parsers, and re-run by sdtui
exactly."""

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
from sdtui.metadata.reader import request_from_png
from sdtui.outputs import save_image
from tests.vendor.a1111_infotext import parse_generation_parameters

MODEL_SHA = "ffef7a279d" + "3" * 54
NEGATIVE = "blurry, low contrast"


def sd3_params(turbo: bool) -> dict[str, Any]:
    """An image event's params from the worker running SD 3.5 Large (CFG and a negative prompt)
    or Large Turbo (4 steps, no CFG: cfg 1)."""
    request = protocol.request("generate", id="r1", prompt="a lighthouse at dusk", seed=42,
                               width=1024, height=1152, steps=4 if turbo else 28,
                               scheduler="euler", cfg=4.5,
                               negative_prompt="" if turbo else NEGATIVE)
    del request["type"], request["id"]
    name = "sd3.5_large_turbo" if turbo else "sd3.5_large"
    return {**request, "schedule": "simple", "base_seed": 42, "index": 0,
            **({"cfg": 1.0, "guidance": None} if turbo else {}),
            "model": f"/data/{name}", "model_sha256": MODEL_SHA, "model_format": "diffusers",
            "family": "sd3", "device": "cuda", "dtype": "bfloat16", "generator": "sdtui 0.1.0"}


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (150, 90, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("sd3-out")
    return {variant: (save_image(out, png(), sd3_params(variant == "turbo")), sd3_params(
        variant == "turbo")) for variant in ("large", "turbo")}


def test_the_settings_line_is_forges_for_sd3_and_names_the_family():
    text = format_infotext(sd3_params(turbo=False))
    assert text.splitlines()[1] == f"Negative prompt: {NEGATIVE}"
    assert text.splitlines()[-1] == (
        "Steps: 28, Sampler: Euler, Schedule type: Simple, CFG scale: 4.5, Seed: 42, "
        "Size: 1024x1152, Model hash: ffef7a279d, Model: sd3.5_large, Family: sd3")


@pytest.mark.parametrize("variant", ["large", "turbo"])
def test_a1111_parses_an_sd3_image(saved, variant):
    path, params = saved[variant]
    res = parse_generation_parameters(Image.open(path).text["parameters"])
    assert (res["Sampler"], res["Schedule type"], res["Family"]) == ("Euler", "Simple", "sd3")
    assert float(res["CFG scale"]) == params["cfg"] and int(res["Steps"]) == params["steps"]
    assert res["Negative prompt"] == params["negative_prompt"]
    assert "Distilled CFG Scale" not in res  # SD 3.5 has no embedded guidance


def test_sd_prompt_reader_and_sd_parsers_read_an_sd3_image(saved):
    path, params = saved["large"]
    reader = ImageDataReader(str(path))
    assert reader.tool == "A1111 webUI" and reader.status.name == "READ_SUCCESS"
    assert (reader.positive, reader.negative) == (params["prompt"], NEGATIVE)
    assert float(reader.parameter["cfg"]) == 4.5 and reader.parameter["model"] == "sd3.5_large"
    info = ParserManager().parse(str(path))
    assert info is not None and " ".join(p.value for p in info.prompts) == params["prompt"]
    assert " ".join(p.value for p in info.negative_prompts) == NEGATIVE
    assert {s.name for s in info.samplers} == {"Euler"}


def test_sdtui_reruns_its_own_sd3_image_exactly_and_the_model_takes_it(saved):
    for variant, (path, params) in saved.items():
        request, warnings = request_from_png(path, set())
        expected = {k: v for k, v in params.items() if k in protocol.GENERATE_FIELDS}
        assert request == {**expected, "count": 1} and warnings == []
        ready = {"family": "sd3", "family_label": "SD 3.5", "sampling": "flow",
                 "size_multiple": 16, "guidance": "none" if variant == "turbo" else "cfg"}
        assert protocol.model_refusal(ready, request) is None
