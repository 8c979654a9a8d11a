"""Precision is a device decision, made once and recorded: float32 on the CPU; FLUX.1 in
bfloat16 from Ampere (compute capability 8.0) on, float16 on Turing (a T4, 7.5: no bfloat16);
Stable Diffusion in float16 on any GPU, as before. A finished image whose latents are NaN (a
float16 overflow) is not saved as a black PNG: the worker says so in one line."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdtui.errors import GenerationError
from sdtui.worker.families import FAMILIES
from sdtui.worker.models import family_dtype
from tests.test_worker import WorkerProcess


@pytest.mark.parametrize(("family", "device", "capability", "dtype"), [
    ("flux1", "cpu", None, torch.float32),
    ("flux1", "cuda", (7, 5), torch.float16),  # T4 (g4dn)
    ("flux1", "cuda", (8, 6), torch.bfloat16),  # A10G (g5)
    ("flux1", "cuda", (8, 9), torch.bfloat16),  # L4 (g6)
    ("sd1", "cuda", (8, 6), torch.float16),
    ("sdxl", "cuda", (7, 5), torch.float16),
    ("sdxl", "cpu", None, torch.float32),
    ("flux2-klein", "cuda", (7, 5), torch.float16),  # T4: diffusers' Flux2 clamps in fp16
    ("flux2-klein", "cuda", (8, 6), torch.bfloat16),
    ("flux2-klein", "cpu", None, torch.float32),
])
def test_precision_follows_the_device(family, device, capability, dtype):
    assert family_dtype(FAMILIES[family], device, capability) == dtype


def with_nan(folder, out, part: str, key: str):
    """A copy of a diffusers folder with one tensor of one component NaN."""
    shutil.copytree(folder, out)
    path = out / part / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, path, metadata={"format": "pt"})
    return out


def nan_transformer(folder, out):
    """The same FLUX.1 folder with a transformer whose output projection is NaN."""
    return with_nan(folder, out, "transformer", "proj_out.weight")


def test_a_nan_image_is_reported_in_one_line_not_saved_black(tiny_flux, tmp_path):
    worker = WorkerProcess(nan_transformer(tiny_flux["schnell"], tmp_path / "nan-flux"))
    events = []
    try:
        assert worker.client.wait_ready(timeout=300)["dtype"] == "float32"
        with pytest.raises(GenerationError) as failed:
            for event in worker.client.generate(prompt="a red lighthouse", width=64, height=64,
                                                steps=2, seed=1, scheduler="euler",
                                                preview_every=0):
                events.append(event)
    finally:
        worker.stop()
    message = str(failed.value)
    assert "the image came out NaN (float32 on cpu), so it was not saved" in message
    assert "\n" not in message
    assert not [e for e in events if e["type"] == "image"]


def nan_vae_decoder(folder, out):
    """The same FLUX.2 Klein folder with a VAE whose last decoder convolution is NaN: the
    latents are fine, the decode overflows (as a float16 VAE can)."""
    return with_nan(folder, out, "vae", "decoder.conv_out.bias")


def test_a_decode_that_overflows_is_reported_in_one_line_not_saved_black(tiny_klein, tmp_path):
    worker = WorkerProcess(nan_vae_decoder(tiny_klein["distilled"], tmp_path / "nan-vae"))
    events = []
    try:
        worker.client.wait_ready(timeout=300)
        with pytest.raises(GenerationError) as failed:
            for event in worker.client.generate(prompt="a red lighthouse", width=64, height=64,
                                                steps=1, seed=1, preview_every=0):
                events.append(event)
    finally:
        worker.stop()
    assert "the image came out NaN (float32 on cpu), so it was not saved" in str(failed.value)
    assert not [e for e in events if e["type"] == "image"]
