"""FLUX.2 Klein images' A1111/Forge infotext: what ran (Euler, Simple; CFG scale 1 for the
step-distilled [klein], the real CFG for base) and the family, since A1111's readers would
otherwise take the image for a Stable Diffusion one; read right by A1111's own parser
(vendored), sd-prompt-reader and sd-parsers, and re-run exactly by sdtui."""

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

MODEL_SHA = "5e1f0c9a2d" + "3" * 54


def klein_params(cfg: float) -> dict[str, Any]:
    """An image event's params from the worker running Klein ([klein] at cfg 1, base at 4)."""
    request = protocol.request("generate", id="r1", prompt="a lighthouse at dusk", seed=42,
                               width=1024, height=768, steps=4 if cfg == 1.0 else 50,
                               scheduler="euler", cfg=cfg)
    del request["type"], request["id"]
    return {**request, "schedule": "simple", "guidance": None, "base_seed": 42, "index": 0,
            "model": "/data/FLUX.2-klein-4B", "model_sha256": MODEL_SHA,
            "model_format": "diffusers", "family": "flux2-klein", "device": "cuda",
            "dtype": "bfloat16", "generator": "sdtui 0.1.0"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("klein-out")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (30, 90, 150)).save(buf, format="PNG")
    return {variant: (save_image(out, buf.getvalue(), params), params)
            for variant, params in (("distilled", klein_params(1.0)),
                                    ("base", klein_params(4.0)))}


def test_the_settings_line_names_the_family():
    line = format_infotext(klein_params(1.0)).splitlines()[-1]
    assert line == ("Steps: 4, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 42, "
                    "Size: 1024x768, Model hash: 5e1f0c9a2d, Model: FLUX.2-klein-4B, "
                    "Family: flux2-klein")


@pytest.mark.parametrize(("variant", "cfg"), [("distilled", 1.0), ("base", 4.0)])
def test_a1111_and_the_other_readers_parse_a_klein_image(saved, variant, cfg):
    path, params = saved[variant]
    res = parse_generation_parameters(Image.open(path).text["parameters"])
    assert (res["Sampler"], res["Schedule type"], res["Family"]) == ("Euler", "Simple",
                                                                     "flux2-klein")
    assert float(res["CFG scale"]) == cfg and "Distilled CFG Scale" not in res
    reader = ImageDataReader(str(path))
    assert reader.status.name == "READ_SUCCESS" and reader.positive == params["prompt"]
    assert reader.parameter["model"] == "FLUX.2-klein-4B"
    info = ParserManager().parse(str(path))
    assert info is not None and {s.name for s in info.samplers} == {"Euler"}


def test_sdtui_reruns_its_own_klein_image_exactly(saved):
    for path, params in saved.values():
        request, warnings = request_from_png(path, set())
        expected = {k: v for k, v in params.items() if k in protocol.GENERATE_FIELDS}
        assert request == {**expected, "count": 1} and warnings == []
