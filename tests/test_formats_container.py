"""FLUX.1, SD 3.5 and FLUX.2 Klein from every file format besides a diffusers folder load offline
and generate through the real worker container: the CPU image's locked dependency set reads each
(the `gguf` package for GGUF transformers and T5 encoders, torch's float8 for fp8 files,
diffusers' converters for BFL's and Stability's layouts), and each set finds its siblings inside
the container's /data. The diffusers folders run in test_flux_container.py,
test_sd3_container.py and test_klein_container.py.

That each format draws the right pixels is proved in-process (test_flux_formats.py,
test_sd3_files.py, test_sd3_sets.py, test_klein_sets.py). Here a worker loads one model, so the
file formats are combined into as few starts as the sets allow: seven, started side by side."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from sdtui.client import decode_png
from sdtui.modelfiles import model_files
from tests.helpers_flux_files import gguf
from tests.helpers_klein_files import write_klein_set
from tests.helpers_sd3_files import write_sd3_set
from tests.test_flux_formats import references, write_all_in_one, write_set
from tests.test_sd3_files import stability_mmditx, write_stability_file
from tests.test_worker_container import model_volume, start_worker

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd3, tiny_klein) -> dict[str, tuple[str, str, Path]]:
    """Each start's (family, the format `ready` names, the path `--model` gets), by the folder
    it travels in. FLUX.1: city96's K-quant GGUF with an fp8 T5, named by the transformer file
    inside its folder; BFL's [schnell] file with a T5 GGUF, named by the folder; an all-in-one
    file stored in fp8. SD 3.5: Stability's single file with its CLIPs and VAE inside and no
    T5; a GGUF MMDiT with a T5 GGUF and the VAE in the LDM layout. Klein: BFL's base file; a
    GGUF."""
    root = tmp_path_factory.mktemp("formats")
    q = gguf().GGMLQuantizationType
    dev, schnell, mmditx = references("dev"), references("schnell"), stability_mmditx()
    (root / "sd3-file").mkdir()
    return {
        "flux1-gguf": ("flux1", "gguf", write_set(
            root / "flux1-gguf", "dev", dev, transformer="gguf", t5="fp8", qtype=q.Q4_K)),
        "flux1-set": ("flux1", "set", write_set(
            root / "flux1-set", "schnell", schnell, t5="gguf").parent),
        "flux1-aio": ("flux1", "safetensors", write_all_in_one(
            root / "flux1-aio" / "flux1-dev-fp8.safetensors", dev, torch.float8_e4m3fn)),
        "sd3-file": ("sd3", "safetensors", write_stability_file(
            tiny_sd3["medium"], root / "sd3-file" / "sd3.5_medium.safetensors", mmditx,
            t5=False)),
        "sd3-gguf": ("sd3", "set", write_sd3_set(
            root / "sd3-gguf" / "sd3.5_large", tiny_sd3["medium"], mmditx, "gguf", t5="gguf",
            vae="ldm").parent),
        "klein-file": ("flux2-klein", "safetensors", write_klein_set(
            tiny_klein["base"], root / "klein-file", "flux-2-klein-base-4b.safetensors")),
        "klein-gguf": ("flux2-klein", "set", write_klein_set(
            tiny_klein["distilled"], root / "klein-gguf" / "flux-2-klein-4b",
            "flux-2-klein-4b-Q8_0.gguf", qtype=q.Q8_0).parent),
    }


def test_every_transformer_format_generates_in_the_container(docker_client, worker_image,
                                                             models):
    # Each model travels under a folder of its own, as its deployment's copy would hold it.
    files = [(source, f"{slug}/{name}") for slug, (_, _, path) in models.items()
             for source, name in model_files(path)]
    # Side by side: while one worker imports and loads, another draws.
    with (model_volume(docker_client, worker_image, files) as volume,
          ThreadPoolExecutor(len(models)) as pool):
        drawn = dict(zip(models, pool.map(lambda slug: ready_and_image(
            docker_client, worker_image, volume, f"{slug}/{models[slug][2].name}"), models),
            strict=True))
    for slug, (family, fmt, path) in models.items():
        ready, image = drawn[slug]
        assert (ready["family"], ready["format"], ready["model"], ready["dtype"]) == (
            family, fmt, f"/data/{slug}/{path.name}", "float32"), ready
        # Only the set without T5 says so.
        assert len(ready["warnings"]) == (slug == "sd3-file"), ready["warnings"]
        assert Image.open(io.BytesIO(decode_png(image))).size == (64, 64), slug
        assert image["params"]["family"] == family, slug


def ready_and_image(docker_client, image, volume, model) -> tuple[dict, dict]:
    """A worker's `ready` and the 64×64 two-step image it draws; the worker removed after (the
    volume's clean-up removes it too, should the start fail)."""
    container, client = start_worker(docker_client, image, volume, model)
    try:
        (drawn,) = [e for e in client.generate(prompt="a tiny castle", seed=5, steps=2,
                                               width=64, height=64, preview_every=0)
                    if e["type"] == "image"]
        return client.ready, drawn
    finally:
        client.close()
        container.remove(force=True)
