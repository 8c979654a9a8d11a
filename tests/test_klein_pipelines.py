"""FLUX.2 Klein ([klein], distilled, and base) from a diffusers folder, run by the real worker
process, against a reference we did not write: diffusers' own Flux2KleinPipeline and
Flux2KleinInpaintPipeline on the same folder, seed, steps, guidance and scheduler settings."""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
import pytest
import torch
from PIL import Image

from sdtui.errors import GenerationError
from tests.helpers_generation import (
    INIT,
    MASK,
    SIZE,
    assert_same,
    b64_png,
    one_image,
    pipeline_pixels,
    pixels,
    reference_pipeline,
    running_workers,
)

PROMPT = "a photo of a red lighthouse"


@pytest.fixture(scope="module")
def workers(tiny_klein):
    with running_workers(tiny_klein) as started:
        yield started


@functools.cache
def reference_pipe(folder, kind: str = "Flux2KleinPipeline"):
    return reference_pipeline(folder, kind)


def reference(folder, kind: str = "Flux2KleinPipeline", **kwargs) -> np.ndarray:
    return pipeline_pixels(reference_pipe(folder, kind), PROMPT, kwargs.pop("seed"), **kwargs)


def generate(worker, **params) -> dict:
    return one_image(worker, PROMPT, **params)


def test_klein_draws_the_pixels_of_diffusers_flux2_klein_pipeline(workers, tiny_klein):
    ours = generate(workers["distilled"], seed=3)  # its own 4 steps
    ref = reference(tiny_klein["distilled"], seed=3, num_inference_steps=4, width=SIZE,
                    height=SIZE, guidance_scale=1.0)
    assert_same(ours, ref)
    params = ours["params"]
    assert (params["family"], params["steps"], params["guidance"]) == ("flux2-klein", 4, None)


def test_base_draws_the_pixels_of_the_pipeline_at_its_cfg(workers, tiny_klein):
    ours = generate(workers["base"], seed=5, steps=2, cfg=4.0)
    ref = reference(tiny_klein["base"], seed=5, num_inference_steps=2, width=SIZE, height=SIZE,
                    guidance_scale=4.0)
    assert_same(ours, ref)
    assert ours["params"]["cfg"] == 4.0


def test_base_takes_a_negative_prompt_as_the_pipeline_takes_its_embeddings(workers,
                                                                           tiny_klein):
    ours = generate(workers["base"], seed=5, steps=2, cfg=4.0, negative_prompt="blurry")
    pipe = reference_pipe(tiny_klein["base"])
    negative, _ = pipe.encode_prompt(prompt="blurry")
    out = pipe(prompt=PROMPT, negative_prompt_embeds=negative, num_inference_steps=2,
               width=SIZE, height=SIZE, guidance_scale=4.0,
               generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert_same(ours, np.asarray(out.convert("RGB"), dtype=int))


@pytest.mark.parametrize("variant", ["distilled", "base"])
def test_inpainting_draws_the_pixels_of_flux2_klein_inpaint_pipeline(workers, tiny_klein,
                                                                      variant):
    """Outside the mask the init image's own pixels are pasted back, as for every family."""
    cfg = {"cfg": 4.0} if variant == "base" else {}
    ours = generate(workers[variant], seed=4, steps=2, init_image=b64_png(INIT),
                    mask=b64_png(MASK), strength=0.9, **cfg)
    ref = reference(tiny_klein[variant], "Flux2KleinInpaintPipeline", seed=4, image=INIT,
                    mask_image=MASK, strength=0.9, num_inference_steps=2, width=SIZE,
                    height=SIZE, guidance_scale=cfg.get("cfg", 1.0))
    pasted = Image.composite(Image.fromarray(ref.astype(np.uint8)), INIT, MASK)
    assert_same(ours, np.asarray(pasted, dtype=int))
    assert not np.array_equal(pixels(ours), np.asarray(INIT, dtype=int))


def test_ready_names_klein_its_guidance_and_steps(workers):
    distilled, base = workers["distilled"].client.ready, workers["base"].client.ready
    assert distilled["family"] == base["family"] == "flux2-klein"
    assert (distilled["guidance"], distilled["default_steps"]) == ("none", 4)
    assert (base["guidance"], base["default_steps"]) == ("cfg", 50)
    assert base["size_multiple"] == 16 and base["sampling"] == "flow"
    assert base["default_size"] == 1024


def test_previews_are_the_sampler_tokens_unpatchified_and_projected(workers, tiny_klein):
    """Each step's preview is ComfyUI's 32-channel Flux2 projection of the tokens the pipeline
    holds at that step, scattered back by diffusers' own _unpack_latents_with_ids and
    unpatchified by its _unpatchify_latents."""
    from sdtui.worker.families.flux2_klein import FAMILY
    from sdtui.worker.sampling import latent_preview

    width, height = 96, 64
    events = list(workers["distilled"].client.generate(
        prompt=PROMPT, width=width, height=height, steps=3, seed=1, scheduler="euler",
        preview_every=1))
    previews = [e for e in events if e["type"] == "preview"]
    assert [p["step"] for p in previews] == [1, 2]

    pipe = reference_pipe(tiny_klein["distilled"])
    seen = []
    ids = pipe._prepare_latent_ids(torch.zeros(1, 128, height // 16, width // 16))

    def keep(pipe, step, timestep, kwargs):
        tokens = pipe._unpack_latents_with_ids(kwargs["latents"], ids)
        seen.append(pipe._unpatchify_latents(tokens))
        return kwargs

    pipe(prompt=PROMPT, width=width, height=height, num_inference_steps=3,
         guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(1),
         output_type="latent", callback_on_step_end=keep)
    for preview, latents in zip(previews, seen[:-1], strict=True):  # none after the last
        image = Image.open(io.BytesIO(base64.b64decode(preview["png"])))
        assert image.size == (width // 8, height // 8)
        expected = np.asarray(latent_preview(latents, FAMILY), dtype=int)
        assert np.array_equal(np.asarray(image, dtype=int), expected)


def test_a_full_variation_is_the_variation_seeds_own_image(workers, tiny_klein):
    """Variation noise is drawn as Flux2KleinPipeline draws its own (patchified): all the way
    to the variation seed, it is that seed's image."""
    ours = generate(workers["distilled"], seed=1, steps=2, variation_amount=1.0,
                    variation_seed=5)
    ref = reference(tiny_klein["distilled"], seed=5, num_inference_steps=2, width=SIZE,
                    height=SIZE, guidance_scale=1.0)
    assert_same(ours, ref)


@pytest.mark.parametrize(("variant", "params", "needle"), [
    ("distilled", {"scheduler": "dpmpp_2m"},
     "runs the Euler sampler only, not DPM++ 2M; pass --scheduler euler"),
    ("distilled", {"width": 72}, "FLUX.2 Klein needs a width that is a multiple of 16, got 72; "
                                 "pass --width 64"),
    ("distilled", {"negative_prompt": "blurry"}, "FLUX.2 Klein takes no negative prompt"),
    ("base", {"guidance": 3.0}, "--guidance does not apply to FLUX.2 Klein: it uses cfg"),
    ("base", {"prompt": "a cat <lora:style:0.5>"}, "LoRAs do not run on FLUX.2 Klein"),
    ("base", {"init_image": b64_png(INIT)}, "FLUX.2 Klein has no img2img (its pipeline takes "
                                            "an image as a reference to edit"),
])
def test_what_klein_cannot_take_is_refused_in_one_line(workers, variant, params, needle):
    with pytest.raises(GenerationError) as refused:
        list(workers[variant].client.generate(**{"prompt": PROMPT, "height": SIZE,
                                                 "width": SIZE, "steps": 1, **params}))
    assert needle in str(refused.value) and "\n" not in str(refused.value)
