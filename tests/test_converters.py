"""Checkpoints written by diffusers' own converters (vendored unmodified in
tests/vendor/diffusers_scripts) from a tiny diffusers folder load in sdtui with the folder's
pixels for every sampler (SD 1.x; a sampler of each spacing on the others); and sdtui's own
tiny-model writer lays files out as they do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sdtui import samplers
from sdtui.worker.models import load_model
from tests.test_families import SPACINGS, sampled

SCRIPTS = Path(__file__).parent / "vendor" / "diffusers_scripts"
SCRIPT = {"sd1": "convert_diffusers_to_original_stable_diffusion.py",
          "sd2": "convert_diffusers_to_original_stable_diffusion.py",
          "sdxl": "convert_diffusers_to_original_sdxl.py"}
# What the released checkpoints hold and the converters do not write: SD 2.x's unused last
# OpenCLIP block, projection and logit scale; SDXL's second encoder's logit scale.
ONLY_IN_RELEASED = {
    "sd1": set(),
    "sd2": {"cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale"},
    "sdxl": {"conditioner.embedders.1.model.logit_scale"},
}


def convert(folder: Path, out: Path, family: str, *flags: str) -> Path:
    subprocess.run([sys.executable, str(SCRIPTS / SCRIPT[family]), "--model_path", str(folder),
                    "--checkpoint_path", str(out), *flags],
                   check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def converted(family_models, tmp_path_factory) -> dict[str, Path]:
    """Each family's tiny folder through diffusers' converter, as .safetensors (SD 1.x also as
    the converter's default .ckpt), with the toy dims' sidecar beside it. The converters run
    side by side (each is mostly a Python start-up)."""
    jobs = {}
    for family, formats in family_models.items():
        folder = tmp_path_factory.mktemp(f"converted-{family}")
        shutil.copytree(formats["safetensors"].with_suffix(".config"), folder / "model.config")
        jobs[family] = (formats["diffusers"], folder / "model.safetensors", family,
                        "--use_safetensors")
    jobs["sd1-ckpt"] = (family_models["sd1"]["diffusers"],
                        jobs["sd1"][1].with_suffix(".ckpt"), "sd1")
    with ThreadPoolExecutor(len(jobs)) as pool:
        paths = list(pool.map(lambda job: convert(*job), jobs.values()))
    return dict(zip(jobs, paths, strict=True))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a_checkpoint_converted_by_diffusers_gives_the_folders_pixels_for_every_sampler(
        converted, loaded_families, family, one_thread):
    """Every sampler on SD 1.x; on the others a sampler of each timestep spacing (the sampler
    and the family are independent: what the format could change is the spacing and the
    weights), at one thread as in test_families, whose folder pixels this reuses."""
    model = load_model(str(converted[family]))
    assert model.family.id == family and model.warnings == []
    folder = loaded_families[family]["diffusers"]
    for sampler in samplers.SAMPLERS if family == "sd1" else SPACINGS.values():
        assert np.array_equal(sampled(model, sampler), sampled(folder, sampler)), sampler


def test_the_converters_default_ckpt_loads_too(converted, loaded_families):
    model = load_model(str(converted["sd1-ckpt"]))
    assert model.format == "ckpt"
    assert np.array_equal(sampled(model, "euler_a"),
                          sampled(loaded_families["sd1"]["diffusers"], "euler_a"))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_sdtuis_tiny_writer_lays_out_files_as_diffusers_converter_does(converted,
                                                                      family_models, family):
    theirs = load_file(converted[family])
    ours = load_file(family_models[family]["safetensors"])
    for key, tensor in theirs.items():
        assert key in ours, key
        assert torch.equal(ours[key], tensor), key
    extra = set(ours) - set(theirs)
    unused_block = {k for k in extra if ".resblocks.23." in k}
    assert extra - unused_block == ONLY_IN_RELEASED[family]
    assert bool(unused_block) == (family == "sd2")
