"""SD 3.5 Medium and Large Turbo from a diffusers folder, run by the real worker process, against
a reference we did not write: diffusers' own StableDiffusion3Pipeline, StableDiffusion3Img2Img-
Pipeline and StableDiffusion3InpaintPipeline on the same folder, seed, steps, CFG, negative
prompt and scheduler settings (the folder's own shift).

The reference's weights are put in their own aligned memory as the worker's are
(tests.helpers_generation.reference_pipeline), as in tests/test_flux_pipelines.py.
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
    images_of,
    pixels,
    reference_pipeline,
    running_workers,
)

PROMPT = "a photo of a red lighthouse"
NEGATIVE = "a blue house at night"


@pytest.fixture(scope="module")
def workers(tiny_sd3):
    with running_workers(tiny_sd3) as started:
        yield started


def reference(folder, kind: str = "StableDiffusion3Pipeline", components=None,
              **kwargs) -> np.ndarray:
    pipe = reference_pipeline(folder, kind, **(components or {}))
    out = pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(kwargs.pop("seed")),
               **kwargs).images[0]
    return np.asarray(out.convert("RGB"), dtype=int)


def generate(worker, **params) -> dict:
    (image,) = images_of(list(worker.client.generate(
        prompt=PROMPT, width=SIZE, height=SIZE, preview_every=0, **params)))
    return image


def test_medium_draws_the_pixels_of_diffusers_sd3_pipeline_with_cfg_and_a_negative_prompt(
        workers, tiny_sd3):
    ours = generate(workers["medium"], seed=3, steps=3, cfg=5.0, negative_prompt=NEGATIVE)
    ref = reference(tiny_sd3["medium"], seed=3, num_inference_steps=3, width=SIZE,
                    height=SIZE, guidance_scale=5.0, negative_prompt=NEGATIVE)
    assert_same(ours, ref)
    params = ours["params"]
    assert (params["family"], params["cfg"], params["scheduler"]) == ("sd3", 5.0, "euler")
    assert params["negative_prompt"] == NEGATIVE


def test_medium_img2img_draws_the_pixels_of_sd3_img2img_pipeline(workers, tiny_sd3):
    ours = generate(workers["medium"], seed=9, steps=4, cfg=4.0, init_image=b64_png(INIT),
                    strength=0.6)
    ref = reference(tiny_sd3["medium"], "StableDiffusion3Img2ImgPipeline", seed=9, image=INIT,
                    strength=0.6, num_inference_steps=4, guidance_scale=4.0)
    assert_same(ours, ref)


def test_medium_inpainting_samples_the_latents_of_sd3_inpaint_pipeline(workers, tiny_sd3):
    """The latents are StableDiffusion3InpaintPipeline's, decoded as StableDiffusion3Pipeline
    and its img2img decode theirs (latents / scaling + shift): diffusers 0.42.1's inpaint
    pipeline alone leaves the VAE's shift_factor out of its decode. Outside the mask the init
    image's own pixels are pasted back, as for every family."""
    ours = generate(workers["medium"], seed=4, steps=4, cfg=4.0, init_image=b64_png(INIT),
                    mask=b64_png(MASK), strength=0.9)
    inpaint = reference_pipeline(tiny_sd3["medium"], "StableDiffusion3InpaintPipeline")
    latents = inpaint(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(4), image=INIT,
                      mask_image=MASK, strength=0.9, num_inference_steps=4, width=SIZE,
                      height=SIZE, guidance_scale=4.0, output_type="latent").images
    vae = inpaint.vae
    with torch.inference_mode():
        decoded = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor,
                             return_dict=False)[0]
    ref = inpaint.image_processor.postprocess(decoded, output_type="pil")[0]
    pasted = Image.composite(ref, INIT, MASK)
    assert_same(ours, np.asarray(pasted, dtype=int))
    assert not np.array_equal(pixels(ours), np.asarray(INIT, dtype=int))


def test_turbo_without_t5_runs_4_steps_without_cfg_as_its_model_card_does(workers, tiny_sd3):
    """Large Turbo with no steps or cfg named: 4 steps, no CFG pass (Stability's card:
    guidance_scale 0); a folder without T5 runs on its two CLIPs, as diffusers runs it with
    text_encoder_3=None."""
    ours = generate(workers["turbo"], seed=5)
    ref = reference(tiny_sd3["turbo"], seed=5, num_inference_steps=4, width=SIZE, height=SIZE,
                    guidance_scale=0.0,
                    components={"text_encoder_3": None, "tokenizer_3": None})
    assert_same(ours, ref)
    assert (ours["params"]["steps"], ours["params"]["cfg"]) == (4, 1.0)


def test_ready_names_sd3_its_guidance_steps_and_a_missing_t5_once(workers, tiny_sd3):
    medium, turbo = workers["medium"].client.ready, workers["turbo"].client.ready
    assert medium["family"] == turbo["family"] == "sd3"
    assert medium["family_label"] == "SD 3.5"
    assert (medium["guidance"], medium["default_steps"]) == ("cfg", 28)
    assert (turbo["guidance"], turbo["default_steps"]) == ("none", 4)
    assert medium["size_multiple"] == 16 and medium["sampling"] == "flow"
    assert medium["default_size"] == 1024 and medium["dtype"] == "float32"
    assert not medium["warnings"]
    (note,) = turbo["warnings"]
    assert "has no T5-XXL text encoder: it runs on its CLIP-L text encoder and CLIP-G text " \
           "encoder alone" in note and str(tiny_sd3["turbo"]) in note


def test_previews_every_step_are_the_latents_projected(workers, tiny_sd3):
    """Each step's preview is ComfyUI's linear 16-channel SD3 projection of the latents
    StableDiffusion3Pipeline holds at that step."""
    from sdtui.worker.families.sd3 import FAMILY
    from sdtui.worker.sampling import latent_preview

    width, height = 96, 64
    events = list(workers["medium"].client.generate(prompt=PROMPT, width=width, height=height,
                                                    steps=3, seed=1, cfg=3.0, preview_every=1))
    previews = [e for e in events if e["type"] == "preview"]
    assert [p["step"] for p in previews] == [1, 2]

    seen = []

    def keep(pipe, step, timestep, kwargs):
        seen.append(kwargs["latents"])
        return kwargs

    reference_pipeline(tiny_sd3["medium"], "StableDiffusion3Pipeline")(
        prompt=PROMPT, width=width, height=height, num_inference_steps=3, guidance_scale=3.0,
        generator=torch.Generator("cpu").manual_seed(1), output_type="latent",
        callback_on_step_end=keep)
    for preview, latents in zip(previews, seen, strict=False):
        image = Image.open(io.BytesIO(base64.b64decode(preview["png"])))
        assert image.size == (width // 8, height // 8)
        expected = np.asarray(latent_preview(latents, FAMILY), dtype=int)
        assert np.array_equal(np.asarray(image, dtype=int), expected)


@pytest.mark.parametrize(("variant", "params", "needle"), [
    ("medium", {"scheduler": "dpmpp_2m"}, "SD 3.5 is a flow-matching model: it runs the Euler "
                                          "sampler only, not DPM++ 2M; pass --scheduler euler"),
    ("medium", {"schedule": "karras"}, "'Karras' is not supported for SD 3.5"),
    ("medium", {"width": 72}, "SD 3.5 needs a width that is a multiple of 16, got 72; pass "
                              "--width 64"),
    ("medium", {"height": 88}, "SD 3.5 needs a height that is a multiple of 16, got 88; pass "
                               "--height 80"),
    ("medium", {"guidance": 3.0}, "--guidance does not apply to SD 3.5: it uses cfg (--cfg)"),
    ("turbo", {"negative_prompt": "blurry"}, "SD 3.5 takes no negative prompt"),
    ("medium", {"prompt": "a cat <lora:style:0.5>"}, "LoRA 'style' not found: no "
                                                     "loras/style.safetensors beside the model"),
])
def test_what_sd3_cannot_take_is_refused_in_one_line(workers, variant, params, needle):
    with pytest.raises(GenerationError) as refused:
        list(workers[variant].client.generate(**{"prompt": PROMPT, "height": 64, "width": 64,
                                                 "steps": 1, **params}))
    assert needle in str(refused.value) and "\n" not in str(refused.value)
