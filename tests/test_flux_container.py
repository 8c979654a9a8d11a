"""FLUX.1 [schnell] and [dev] diffusers folders load offline and generate through the real
worker container (the CPU image's locked dependency set), as the other families do
(tests/test_families_container.py), and `sdtui --no-ui` runs FLUX.1 [dev] and a split set with
a LoRA on Option B."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from local_cli import events, labelled, one_line, throwaway_cli
from PIL import Image

from sdtui.client import decode_png
from sdtui.metadata.png_chunks import embed_text
from sdtui.modelfiles import model_files, sha256_file
from sdtui.outputs import read_metadata
from tests.test_flux_metadata import FORGE_FLUX, png
from tests.test_worker_container import model_volume, start_worker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

VARIANTS = {"schnell": "none", "dev": "embedded"}


def test_flux1_generates_in_the_container(docker_client, worker_image, tiny_flux):
    files = [f for variant in VARIANTS for f in model_files(tiny_flux[variant])]
    with model_volume(docker_client, worker_image, files) as volume:
        with ThreadPoolExecutor(len(VARIANTS)) as pool:
            started = list(pool.map(
                lambda variant: start_worker(docker_client, worker_image, volume,
                                             tiny_flux[variant].name), VARIANTS))
        try:
            for (variant, guidance), (_, client) in zip(VARIANTS.items(), started, strict=True):
                ready = client.ready
                assert (ready["family"], ready["guidance"], ready["dtype"]) == (
                    "flux1", guidance, "float32"), ready
                events = list(client.generate(prompt="a tiny castle", seed=5, steps=3,
                                              width=64, height=96, scheduler="euler",
                                              preview_every=1))
                assert [e["step"] for e in events if e["type"] == "preview"] == [1, 2]
                image = next(e for e in events if e["type"] == "image")
                assert Image.open(io.BytesIO(decode_png(image))).size == (64, 96)
                assert image["params"]["family"] == "flux1"
                assert image["params"]["guidance"] == (3.5 if variant == "dev" else None)
        finally:
            for container, client in started:
                client.close()
                container.remove(force=True)


def test_flux1_dev_on_option_b_with_no_ui(tmp_path, worker_image, docker_client, tiny_flux):
    with throwaway_cli(tmp_path, docker_client) as cli:
        model = ["--model", str(tiny_flux["dev"])]
        r = cli.run(*model, "--prompt", "a red barn", "--scheduler", "euler", "--steps", "3",
                    "--width", "64", "--height", "64", "--guidance", "5", "--seed", "7",
                    "--json")
        assert r.returncode == 0, r.stderr
        (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
        meta = read_metadata(Path(saved))
        assert meta["params"]["family"] == "flux1" and meta["params"]["guidance"] == 5
        assert ("Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 5,"
                in meta["parameters"])
        # A Forge FLUX.1 [dev] PNG re-runs on it: its Distilled CFG, sampler, schedule and seed;
        # the size and steps given as flags; Forge's module list named in the warning.
        forge = tmp_path / "forge-flux.png"
        forge.write_bytes(embed_text(png(), {"parameters": FORGE_FLUX}))
        r = cli.run(*model, "--from-png", str(forge), "--steps", "2", "--width", "64",
                    "--height", "64", "--json")
        assert r.returncode == 0, r.stderr
        (warned,) = [e["message"] for e in events(r.stdout) if e["event"] == "warning"]
        assert warned == ("forge-flux.png (A1111): sdtui cannot reproduce Module 1: ae, Module "
                          "2: clip_l, Module 3: t5xxl_fp16; re-running without them")
        (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
        rerun = read_metadata(Path(saved))["params"]
        assert (rerun["guidance"], rerun["cfg"], rerun["scheduler"], rerun["schedule"],
                rerun["seed"]) == (3.5, 1.0, "euler", "simple", 42), rerun
        # What FLUX.1 cannot take is refused in one line, exit 2, and nothing is generated.
        for argv, needle in [
            (["--scheduler", "euler_a"], "FLUX.1 is a flow-matching model: it runs the Euler "
                                         "sampler only, not Euler a; pass --scheduler euler"),
            (["--scheduler", "euler", "--negative-prompt", "blurry"],
             "FLUX.1 takes no negative prompt"),
            (["--scheduler", "euler", "--width", "72"], "a width that is a multiple of 16"),
        ]:
            r = cli.run(*model, "--prompt", "a red barn", "--steps", "3", "--height", "64",
                        *(["--width", "64"] if "--width" not in argv else []), *argv)
            assert r.returncode == 2, (argv, r.stderr)
            assert needle in one_line(r.stderr), argv
        assert len(list(cli.out.glob("*.png"))) == 2
        assert len(labelled(docker_client, cli.name)[0]) == 1


def test_no_steps_or_sampler_given_means_the_models_own(tmp_path, worker_image, docker_client,
                                                        tiny_flux, tiny_diffusers):
    """FLUX.1 [schnell] runs Euler (Simple) at its 4 steps and SD its 30 steps of Euler a, when
    the user names neither; each image records what ran."""
    with throwaway_cli(tmp_path, docker_client) as cli:
        for model, steps, sampler in [(tiny_flux["schnell"], 4, "Sampler: Euler, "
                                       "Schedule type: Simple,"),
                                      (tiny_diffusers, 30, "Sampler: Euler a,")]:
            r = cli.run("--model", str(model), "--prompt", "a red barn", "--width", "64",
                        "--height", "64", "--seed", "7", "--json")
            assert r.returncode == 0, r.stderr
            (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
            meta = read_metadata(Path(saved))
            assert meta["params"]["steps"] == steps, meta["params"]
            assert f"Steps: {steps}, {sampler}" in meta["parameters"], meta["parameters"]


def test_a_flux1_set_with_a_lora_on_option_b_with_no_ui(tmp_path, worker_image, docker_client):
    """`sdtui --no-ui --model SET_FOLDER` saves a FLUX.1 image on Option B, and `<lora:NAME:W>`
    in the prompt applies the kohya LoRA from the loras/ folder beside the set, which the
    deployment copied with it: another image, recorded. (Every other format in the container:
    test_formats_container.py.)"""
    from tests.helpers_flux_loras import kohya_flux_lora
    from tests.test_flux_formats import references, write_set

    refs = references("dev")
    folder = write_set(tmp_path / "models" / "flux1-dev", "dev", refs).parent
    lora = kohya_flux_lora(refs["flux"], refs["clip"],
                           folder.parent / "loras" / "style.safetensors")
    drawn = {}
    with throwaway_cli(tmp_path, docker_client) as cli:
        for prompt in ("a red barn", "a red barn <lora:style:0.8>"):
            r = cli.run("--model", str(folder), "--prompt", prompt, "--steps", "2", "--width",
                        "64", "--height", "64", "--seed", "7", "--json")
            assert r.returncode == 0, r.stderr
            (saved,) = [e["path"] for e in events(r.stdout) if e["event"] == "image"]
            drawn[prompt] = (np.asarray(Image.open(saved).convert("RGB"), dtype=int),
                             read_metadata(Path(saved)))
    (plain, meta), (styled, styled_meta) = drawn.values()
    params = meta["params"]
    assert (params["family"], params["scheduler"], params["guidance"]) == ("flux1", "euler", 3.5)
    assert "loras" not in params
    assert [(r["name"], r["weight"], r["sha256"]) for r in styled_meta["params"]["loras"]] == [
        ("style", 0.8, sha256_file(lora)[:12])]
    assert 'Lora hashes: "style: ' in styled_meta["parameters"]
    assert np.abs(styled - plain).mean() > 1, "the LoRA did not change the image"
