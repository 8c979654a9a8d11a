"""`<lora:NAME:W>` on FLUX.1 (and SD 3.5), in the worker's sampler, against a reference we did
not write: diffusers' own pipeline on the same folder with `load_lora_weights` and
`set_adapters([NAME], [W])`. kohya's files keep `alpha` beside each pair and scale by
alpha/rank; diffusers' converter folds that into the weights, so kohya's multiplier W (what
A1111/Forge apply for `<lora:NAME:W>`) is the adapter weight W. A LoRA made for another family
is refused in one line naming it; a GGUF transformer takes the LoRA as its safetensors twin
does (peft wraps diffusers' GGUF layers, which dequantize per layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdtui.devtools.tiny_flux import write_tiny_flux
from sdtui.devtools.tiny_lora import write_tiny_lora
from sdtui.devtools.tiny_sd3 import write_tiny_sd3
from sdtui.errors import EXIT_BAD_INPUT
from sdtui.worker import lora
from sdtui.worker.lora import LoraInvalid
from sdtui.worker.models import load_model
from sdtui.worker.sampling import Sampler
from tests.helpers_flux_loras import (
    SD3_TARGETS,
    bfl_twin,
    diffusers_lora,
    kohya_flux_lora,
)
from tests.helpers_generation import pipeline_pixels, reference_pipeline
from tests.test_flux_formats import GGUF_MAX_LEVELS, references, write_set
from tests.test_lora_families import FAST, generate

PROMPT = "a lighthouse at dusk"
# diffusers' FLUX.1 training script's layers (examples/dreambooth/train_dreambooth_lora_flux.py).
FLUX_TARGETS = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj",
                "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj",
                "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"]


def kohya_sd3_lora(out):
    """An SD 3.5 LoRA's names as sd-scripts writes them (its MMDiT's joint blocks), no
    metadata: the layout alone says SD 3.5."""
    save_file({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.ones(4, 32),
               "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": torch.ones(96, 4),
               "lora_unet_joint_blocks_0_x_block_attn_qkv.alpha": torch.tensor(4.0)}, out)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_diffusers):
    """A tiny FLUX.1 [dev] and SD 3.5 Medium folder side by side, with loras/ beside them:
    FLUX.1 LoRAs in kohya's and diffusers' layouts, an SD 3.5 one in diffusers' layout, an
    SD 1.x one (kohya's) and an SD 3.5 one in sd-scripts' names."""
    import diffusers

    root = tmp_path_factory.mktemp("flux-lora")
    flux = write_tiny_flux(root / "tiny-flux1-dev", "dev", seed=7)
    sd3 = write_tiny_sd3(root / "tiny-sd3.5-medium", "medium", seed=7)
    loras = root / "loras"
    pipe = diffusers.FluxPipeline.from_pretrained(flux, local_files_only=True)
    kohya_flux_lora(bfl_twin(pipe.transformer), pipe.text_encoder, loras / "kohya.safetensors")
    diffusers_lora(diffusers.FluxPipeline, pipe, loras / "flux.safetensors", FLUX_TARGETS)
    diffusers_lora(diffusers.StableDiffusion3Pipeline,
                   diffusers.StableDiffusion3Pipeline.from_pretrained(sd3, local_files_only=True),
                   loras / "sd3.safetensors", SD3_TARGETS)
    write_tiny_lora(tiny_diffusers, loras / "sd1.safetensors", seed=4)
    kohya_sd3_lora(loras / "sd3-kohya.safetensors")
    return {"flux": flux, "sd3": sd3, "loras": loras,
            "samplers": {"flux": Sampler(load_model(str(flux))),
                         "sd3": Sampler(load_model(str(sd3)))}}


_PLAIN: dict[str, np.ndarray] = {}


def plain(models, name: str) -> np.ndarray:
    if name not in _PLAIN:
        _PLAIN[name] = generate(models["samplers"][name], PROMPT)[0]
    return _PLAIN[name]


def reference(folder, kind: str, file, weight: float, **kwargs) -> np.ndarray:
    """diffusers' own pipeline with the LoRA loaded and weighted its way."""
    pipe = reference_pipeline(folder, kind)
    pipe.load_lora_weights(str(file), adapter_name="ref")
    pipe.set_adapters(["ref"], [weight])
    return pipeline_pixels(pipe, PROMPT, FAST["seed"], num_inference_steps=FAST["steps"],
                           width=FAST["width"], height=FAST["height"], **kwargs)


@pytest.mark.parametrize("name", ["kohya", "flux"])
def test_a_flux_lora_draws_the_pixels_of_diffusers_load_lora_weights(models, name):
    ours, params = generate(models["samplers"]["flux"], f"<lora:{name}:0.7> {PROMPT}")
    ref = reference(models["flux"], "FluxPipeline", models["loras"] / f"{name}.safetensors",
                    0.7, guidance_scale=3.5)
    assert np.abs(ours.astype(int) - plain(models, "flux")).mean() > 1, "the LoRA did nothing"
    assert np.array_equal(ours, ref), f"pixels differ by up to {np.abs(ours - ref).max()}"
    assert [(r["name"], r["weight"]) for r in params["loras"]] == [(name, 0.7)]


@pytest.mark.parametrize("name", ["kohya", "flux"])
def test_weight_zero_is_the_plain_image_and_the_next_request_is_plain_again(models, name):
    sampler = models["samplers"]["flux"]
    zero, _ = generate(sampler, f"<lora:{name}:0> {PROMPT}")
    assert np.array_equal(zero, plain(models, "flux"))
    generate(sampler, f"<lora:{name}:1> {PROMPT}")
    after, params = generate(sampler, PROMPT)
    assert np.array_equal(after, plain(models, "flux")) and "loras" not in params


def test_an_sd35_lora_draws_the_pixels_of_diffusers_load_lora_weights(models):
    ours, _ = generate(models["samplers"]["sd3"], f"<lora:sd3:0.8> {PROMPT}")
    ref = reference(models["sd3"], "StableDiffusion3Pipeline",
                    models["loras"] / "sd3.safetensors", 0.8,
                    guidance_scale=7.5)  # the request's default cfg
    assert np.abs(ours.astype(int) - plain(models, "sd3")).mean() > 1, "the LoRA did nothing"
    assert np.array_equal(ours, ref), f"pixels differ by up to {np.abs(ours - ref).max()}"
    assert np.array_equal(generate(models["samplers"]["sd3"], PROMPT)[0], plain(models, "sd3"))


@pytest.mark.parametrize(("model", "name", "made_for"), [
    ("flux", "sd1", "SD 1.x"),
    ("flux", "sd3-kohya", "SD 3.5"),
    ("sd3", "flux", "FLUX.1"),
    ("sd3", "kohya", "FLUX.1"),
])
def test_a_lora_for_another_family_is_refused_in_one_line(models, model, name, made_for):
    label = {"flux": "FLUX.1", "sd3": "SD 3.5"}[model]
    with pytest.raises(LoraInvalid) as refused:
        generate(models["samplers"][model], f"<lora:{name}:1> {PROMPT}")
    message = str(refused.value)
    assert f"loras/{name}.safetensors does not fit this {label} model: it was trained for " \
           f"{made_for}" in message and "\n" not in message
    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert np.array_equal(generate(models["samplers"][model], PROMPT)[0], plain(models, model))


def test_an_sd35_lora_in_kohyas_layout_is_refused_saying_what_sd35_reads(models):
    with pytest.raises(LoraInvalid, match=r"loras/sd3-kohya.safetensors is in a layout diffusers "
                                          r"cannot convert for SD 3.5 \(key 'lora_unet_joint_"
                                          r".*it takes diffusers' layout"):
        generate(models["samplers"]["sd3"], f"<lora:sd3-kohya:1> {PROMPT}")


def test_ready_lists_a_flux_lora_with_the_family_its_header_names(models):
    listed = {entry["name"]: entry for entry in lora.listed(str(models["flux"]))}
    assert listed["kohya"]["family"] == "flux1" and listed["sd1"]["family"] == "sd1"
    assert "family" not in listed["flux"]  # diffusers' header names no family


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The same FLUX.1 [dev] as a split set with a safetensors and with a Q8_0 GGUF
    transformer, each with the same kohya LoRA in its loras/."""
    refs = references("dev")
    root = tmp_path_factory.mktemp("flux-lora-sets")
    out = {}
    for fmt in ("safetensors", "gguf"):
        transformer = write_set(root / fmt, "dev", refs, transformer=fmt)
        kohya_flux_lora(refs["flux"], refs["clip"], root / fmt / "loras" / "kohya.safetensors")
        out[fmt] = Sampler(load_model(str(transformer)))
    return out


def test_a_lora_applies_to_a_gguf_transformer_as_to_its_safetensors_twin(sets):
    """On the transformer alone (text-encoder weight 0): the GGUF layers are what is tested."""
    gguf_plain, _ = generate(sets["gguf"], PROMPT)
    gguf_lora, _ = generate(sets["gguf"], f"<lora:kohya:0:1> {PROMPT}")
    twin_lora, _ = generate(sets["safetensors"], f"<lora:kohya:0:1> {PROMPT}")
    moved = np.abs(gguf_lora.astype(int) - gguf_plain).max()
    apart = np.abs(gguf_lora.astype(int) - twin_lora).max()
    assert moved > 4 * GGUF_MAX_LEVELS, f"the LoRA moved the GGUF image by {moved} levels only"
    assert apart <= GGUF_MAX_LEVELS, f"GGUF and safetensors differ by {apart} levels with the LoRA"
    assert np.array_equal(generate(sets["gguf"], PROMPT)[0], gguf_plain)

