"""FLUX.1 [schnell] and [dev] from a diffusers folder, run by the real worker process, against
a reference we did not write: diffusers' own FluxPipeline, FluxImg2ImgPipeline and
FluxInpaintPipeline on the same folder, seed, steps, guidance and scheduler settings.

The reference's weights are put in their own aligned memory as the worker's are
(sdtui.worker.aligned.align_weights): CPU kernels round differently on unaligned weights, and a
diffusers folder's tensors are views at whatever offset each sits in its file.
"""

from __future__ import annotations

import base64
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
from tests.test_worker import WorkerProcess

PROMPT = "a photo of a red lighthouse"


@pytest.fixture(scope="module")
def workers(tiny_flux):
    with running_workers(tiny_flux) as started:
        yield started


def reference(folder, kind: str = "FluxPipeline", **kwargs) -> np.ndarray:
    return pipeline_pixels(reference_pipeline(folder, kind), PROMPT, kwargs.pop("seed"),
                           **kwargs)


def generate(worker, **params) -> dict:
    return one_image(worker, PROMPT, **params)


def test_schnell_draws_the_pixels_of_diffusers_flux_pipeline(workers, tiny_flux):
    ours = generate(workers["schnell"], seed=3, steps=4)
    ref = reference(tiny_flux["schnell"], seed=3, num_inference_steps=4, width=SIZE,
                    height=SIZE, guidance_scale=0.0)
    assert_same(ours, ref)
    assert ours["params"]["family"] == "flux1" and ours["params"]["guidance"] is None


@pytest.mark.parametrize("guidance", [None, 7.0])
def test_dev_draws_the_pixels_of_diffusers_flux_pipeline_at_its_guidance(workers, tiny_flux,
                                                                           guidance):
    ours = generate(workers["dev"], seed=5, steps=3, guidance=guidance)
    ref = reference(tiny_flux["dev"], seed=5, num_inference_steps=3, width=SIZE, height=SIZE,
                    guidance_scale=guidance or 3.5)
    assert_same(ours, ref)
    assert ours["params"]["guidance"] == (guidance or 3.5) and ours["params"]["cfg"] == 1.0


def test_dev_img2img_draws_the_pixels_of_flux_img2img_pipeline(workers, tiny_flux):
    ours = generate(workers["dev"], seed=9, steps=4, init_image=b64_png(INIT), strength=0.6)
    ref = reference(tiny_flux["dev"], "FluxImg2ImgPipeline", seed=9, image=INIT, strength=0.6,
                    num_inference_steps=4, width=SIZE, height=SIZE, guidance_scale=3.5)
    assert_same(ours, ref)


def test_dev_inpainting_draws_the_pixels_of_flux_inpaint_pipeline(workers, tiny_flux):
    """Outside the mask the init image's own pixels are pasted back, as for every family."""
    ours = generate(workers["dev"], seed=4, steps=4, init_image=b64_png(INIT),
                    mask=b64_png(MASK), strength=0.9)
    ref = reference(tiny_flux["dev"], "FluxInpaintPipeline", seed=4, image=INIT,
                    mask_image=MASK, strength=0.9, num_inference_steps=4, width=SIZE,
                    height=SIZE, guidance_scale=3.5)
    pasted = Image.composite(Image.fromarray(ref.astype(np.uint8)), INIT, MASK)
    assert_same(ours, np.asarray(pasted, dtype=int))
    assert not np.array_equal(pixels(ours), np.asarray(INIT, dtype=int))


def test_ready_names_flux1_its_guidance_steps_and_size_multiple(workers):
    schnell, dev = workers["schnell"].client.ready, workers["dev"].client.ready
    assert schnell["family"] == dev["family"] == "flux1"
    assert (schnell["guidance"], schnell["default_steps"]) == ("none", 4)
    assert (dev["guidance"], dev["default_steps"]) == ("embedded", 28)
    assert dev["size_multiple"] == 16 and dev["sampling"] == "flow"
    assert dev["default_size"] == 1024 and dev["dtype"] == "float32"


def test_previews_every_step_are_the_unpacked_latents_projected(workers, tiny_flux):
    """Each step's preview is ComfyUI's linear 16-channel projection of the latents FluxPipeline
    holds at that step, unpacked by diffusers' own _unpack_latents."""
    import diffusers

    from sdtui.worker.aligned import align_weights
    from sdtui.worker.families.flux1 import FAMILY
    from sdtui.worker.sampling import latent_preview

    width, height = 96, 64
    events = list(workers["dev"].client.generate(prompt=PROMPT, width=width, height=height,
                                                 steps=3, seed=1, scheduler="euler",
                                                 preview_every=1))
    previews = [e for e in events if e["type"] == "preview"]
    assert [p["step"] for p in previews] == [1, 2]

    pipe = diffusers.FluxPipeline.from_pretrained(tiny_flux["dev"], local_files_only=True)
    align_weights(pipe)
    seen = []

    def keep(pipe, step, timestep, kwargs):
        seen.append(pipe._unpack_latents(kwargs["latents"], height, width, pipe.vae_scale_factor))
        return kwargs

    pipe(prompt=PROMPT, width=width, height=height, num_inference_steps=3, guidance_scale=3.5,
         generator=torch.Generator("cpu").manual_seed(1), output_type="latent",
         callback_on_step_end=keep)
    for preview, latents in zip(previews, seen, strict=False):
        image = Image.open(io.BytesIO(base64.b64decode(preview["png"])))
        assert image.size == (width // 8, height // 8)  # the latent grid, not the packing
        expected = np.asarray(latent_preview(latents, FAMILY), dtype=int)
        assert np.array_equal(np.asarray(image, dtype=int), expected)


@pytest.mark.parametrize(("params", "needle"), [
    ({"scheduler": "dpmpp_2m"}, "runs the Euler sampler only, not DPM++ 2M; pass --scheduler "
                                "euler"),
    ({"scheduler": "euler", "schedule": "karras"}, "'Karras' is not supported for FLUX.1"),
    ({"scheduler": "euler", "width": 72}, "FLUX.1 needs a width that is a multiple of 16, "
                                          "got 72; pass --width 64"),
    ({"scheduler": "euler", "negative_prompt": "blurry"}, "FLUX.1 takes no negative prompt"),
])
def test_what_flux_cannot_take_is_refused_in_one_line(workers, params, needle):
    with pytest.raises(GenerationError) as refused:
        list(workers["dev"].client.generate(prompt=PROMPT, **{"height": 64, "width": 64,
                                                              **params}))
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_guidance_is_refused_for_schnell_and_for_stable_diffusion(workers, tiny_diffusers):
    with pytest.raises(GenerationError, match="--guidance does not apply to FLUX.1: it takes "
                                              "no guidance"):
        generate(workers["schnell"], guidance=3.0)
    from sdtui.protocol import model_refusal

    sd = WorkerProcess(tiny_diffusers)
    try:
        ready = sd.client.wait_ready(timeout=300)
    finally:
        sd.stop()
    assert "--guidance does not apply to SD 1.x" in model_refusal(ready, {"guidance": 2.0})
    assert model_refusal(ready, {"schedule": "simple"}).startswith(
        "schedule type 'Simple' is not supported for SD 1.x")


def test_a_full_variation_is_the_variation_seeds_own_image(workers, tiny_flux):
    """Variation noise is drawn unpacked and packed as FluxPipeline packs its own: all the way
    to the variation seed, it is that seed's image."""
    ours = generate(workers["dev"], seed=1, steps=3, variation_amount=1.0, variation_seed=5)
    ref = reference(tiny_flux["dev"], seed=5, num_inference_steps=3, width=SIZE, height=SIZE,
                    guidance_scale=3.5)
    assert_same(ours, ref)
    halfway = generate(workers["dev"], seed=1, steps=3, variation_amount=0.5, variation_seed=5)
    assert not np.array_equal(pixels(halfway), ref)


def test_a_missing_flux_lora_is_refused_in_one_line_through_the_worker(workers):
    """The LoRAs themselves are tests/test_flux_loras.py's."""
    with pytest.raises(GenerationError, match="LoRA 'style' not found: no loras/style"):
        list(workers["schnell"].client.generate(prompt="a cat <lora:style:0.5>", steps=1,
                                                width=SIZE, height=SIZE, scheduler="euler"))
