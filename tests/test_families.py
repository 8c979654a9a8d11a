"""The model families (SD 1.x, SD 2.x, SDXL base): detection from the key layout, loading each
from every format with the same pixels, what `ready` says, the shipped configs and tokenizers,
and the refusals that name what a file is."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sdtui import protocol, samplers
from sdtui.devtools import family_assets
from sdtui.devtools.random_checkpoint import full_size_layout, write_random_checkpoint
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.worker import ldm
from sdtui.worker.checkpoint import ModelInvalid
from sdtui.worker.families import FAMILIES, detect, is_inpainting
from sdtui.worker.models import LoadedModel, load_model
from sdtui.worker.sampling import Sampler
from tests.helpers_models import open_clip_tokenizer

FAST = {"steps": 2, "width": 64, "height": 64, "preview_every": 0, "seed": 5}


@pytest.fixture(scope="module")
def loaded(loaded_families) -> dict[str, dict[str, LoadedModel]]:
    return loaded_families


_SAMPLERS: dict[int, Sampler] = {}
_PIXELS: dict[tuple[int, str, int], np.ndarray] = {}


def sampled(model: LoadedModel, sampler: str) -> np.ndarray:
    """The default request's image with `sampler`, computed once per model (and thread count:
    it can change the float rounding)."""
    key = (id(model), sampler, torch.get_num_threads())
    if key not in _PIXELS:
        _PIXELS[key] = pixels(generate(model, scheduler=sampler))[0]
    return _PIXELS[key]


def generate(model: LoadedModel, **params) -> list[tuple[str, dict]]:
    """Events of one request through the worker's sampler (one per model, as in the worker)."""
    sampler = _SAMPLERS.setdefault(id(model), Sampler(model))
    events: list[tuple[str, dict]] = []
    req = protocol.request("generate", id="t", **{"prompt": "a lighthouse at dusk", **FAST,
                                                  **params})
    sampler.run(req, lambda kind, fields: events.append((kind, fields)), threading.Event())
    return events


def pixels(events) -> list[np.ndarray]:
    from io import BytesIO

    from PIL import Image

    return [np.asarray(Image.open(BytesIO(fields["png"]))) for kind, fields in events
            if kind == "image"]


# --- every family, every format --------------------------------------------------------------


# A sampler of each timestep spacing (every sampler: tests/test_converters.py).
SPACINGS = {s.spacing: s.id for s in samplers.SAMPLERS.values()}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_every_format_of_a_family_gives_the_same_pixels(loaded, family, one_thread):
    models = loaded[family]
    for fmt, model in models.items():
        assert (model.family.id, model.format) == (family, fmt)
    assert {"leading", "linspace"} <= set(SPACINGS)
    for sampler in SPACINGS.values():
        folder = sampled(models["diffusers"], sampler)
        assert folder.std() > 0
        same = sampled(models["safetensors"], sampler)
        assert np.array_equal(folder, same), f"{family}: safetensors differs with {sampler}"
    # After reading, a .ckpt takes the .safetensors path.
    assert np.array_equal(sampled(models["ckpt"], "euler_a"),
                          sampled(models["diffusers"], "euler_a"))


def test_a_folder_whose_scheduler_config_lacks_fields_draws_like_the_single_file(
        family_models, tmp_path, one_thread):
    """Older diffusers folders lack clip_sample (DDIM's default then clips x0), and a config
    may carry another scheduler's sampling field: neither changes the pixels."""
    folder = Path(shutil.copytree(family_models["sd1"]["diffusers"], tmp_path / "sd1"))
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    for field in ("clip_sample", "set_alpha_to_one", "steps_offset"):
        config.pop(field, None)
    config["final_sigmas_type"] = "sigma_min"  # Euler's default is "zero"
    config_file.write_text(json.dumps(config))
    stripped, single = load_model(str(folder)), load_model(
        str(family_models["sd1"]["safetensors"]))
    for sampler in ("ddim", "euler"):
        assert np.array_equal(sampled(stripped, sampler), sampled(single, sampler)), sampler


def test_ready_names_the_family_prediction_and_default_size(loaded):
    info = {family: models["safetensors"].info() for family, models in loaded.items()}
    assert {f: (i["family"], i["prediction"], i["default_size"], i["inpainting"])
            for f, i in info.items()} == {
        "sd1": ("sd1", "epsilon", 512, False),
        "sd2": ("sd2", "v_prediction", 768, False),
        "sdxl": ("sdxl", "epsilon", 1024, False),
    }
    ready = protocol.event("ready", protocol=1, torch="2", diffusers="0", **info["sdxl"])
    assert ready["family"] == "sdxl" and ready["warnings"] == []


def test_a_request_without_a_size_gets_the_models_own(loaded):
    from tests.test_features_worker import ASTRONAUT, b64_png

    init = b64_png(ASTRONAUT)
    for family, size in (("sd1", 512), ("sd2", 768), ("sdxl", 1024)):
        events = generate(loaded[family]["diffusers"], width=None, height=None, init_image=init,
                          strength=0.0)  # strength 0: the init image at the model's size
        (image,) = [fields for kind, fields in events if kind == "image"]
        assert (image["params"]["width"], image["params"]["height"]) == (size, size)
        assert image["params"]["family"] == family
        assert pixels(events)[0].shape[:2] == (size, size)


def test_an_explicit_size_is_kept(loaded):
    (image,) = pixels(generate(loaded["sdxl"]["safetensors"], width=64, height=96))
    assert image.shape[:2] == (96, 64)


# --- SDXL generation ------------------------------------------------------------------------


def test_sdxl_generates_with_pooled_embeddings_img2img_variations_and_previews(loaded):
    from tests.test_features_worker import ASTRONAUT, b64_png

    model = loaded["sdxl"]["safetensors"]
    events = generate(model, preview_every=1)
    previews = [fields for kind, fields in events if kind == "preview"]
    assert [p["step"] for p in previews] == [1]
    plain = pixels(events)[0]
    weighted = pixels(generate(model, prompt="a (lighthouse:1.5) at dusk"))[0]
    blend = pixels(generate(model, prompt="a cat:0.3 a dog:0.7"))[0]
    assert not np.array_equal(plain, weighted) and not np.array_equal(plain, blend)
    varied = pixels(generate(model, variation_amount=0.5, variation_seed=3, count=2))
    assert not np.array_equal(varied[0], varied[1])
    moved = pixels(generate(model, init_image=b64_png(ASTRONAUT), strength=0.5, steps=2))[0]
    assert moved.shape == (64, 64, 3) and moved.std() > 0


def test_sdxl_empty_negative_prompt_is_zeros_as_in_diffusers(loaded):
    from sdtui.worker.prompts import PromptEncoder

    pipe = loaded["sdxl"]["diffusers"].pipe
    ours = PromptEncoder(pipe, "sdxl").encode("a lighthouse", "")
    assert ours["pooled_prompt_embeds"].shape == (1, 32)
    assert ours["prompt_embeds"].shape[-1] == 64  # both encoders' hidden states side by side
    theirs = pipe.encode_prompt("a lighthouse", do_classifier_free_guidance=True)
    assert torch.equal(ours["negative_prompt_embeds"], theirs[1])
    assert torch.equal(ours["negative_pooled_prompt_embeds"], theirs[3])
    assert torch.allclose(ours["prompt_embeds"], theirs[0], atol=1e-5)
    assert torch.allclose(ours["pooled_prompt_embeds"], theirs[2], atol=1e-5)


def test_an_sdxl_decode_in_float16_is_finite(family_models, monkeypatch):
    """SDXL's VAE overflows in float16: sdtui decodes it upcast (diffusers' force_upcast). On a
    CPU this checks the dtype path: the tiny VAE is scaled so that float16 overflows."""
    model = load_model(str(family_models["sdxl"]["safetensors"]), dtype=torch.float16)
    vae = model.pipe.vae
    assert vae.dtype == torch.float16 and vae.config.force_upcast
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(3000)  # activations beyond float16's 65504
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half() * 4
    with torch.inference_mode():
        naive = vae.decode(latents / vae.config.scaling_factor).sample
    assert not torch.isfinite(naive).all()  # the defect this guards against
    seen = []
    vae.decoder.conv_in.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    image = np.asarray(Sampler(model).decode(latents))
    assert seen == [torch.float32]
    assert image.std() > 0 and np.isfinite(image).all()


# --- what a file is --------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "counts"), [
    ("sd1", {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
    ("sd2", {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}),
    ("sdxl", {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
              "text_encoder_2": 694_659_840}),
])
@pytest.mark.parametrize("inpainting", [False, True])
def test_released_key_layouts_load_with_the_shipped_configs(family, counts, inpainting,
                                                            tmp_path):
    """The released checkpoints' layout at full size (on the meta device, so it costs no
    memory) is detected and fits the shipped configs with no sidecar; parameter counts are the
    released models' (an inpainting UNet's first conv takes 5 more channels)."""
    state = full_size_layout(family, inpainting)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    spec = detect(tmp_path / "model.safetensors", shapes)
    assert spec.id == family and is_inpainting(shapes) == inpainting
    if inpainting:
        counts = {**counts, "unet": counts["unet"] + 5 * 320 * 3 * 3}
    sources = ldm.ConfigSources.beside(tmp_path / "model.safetensors", spec)
    loaded = ldm.Loaded(state)
    parts = {kind: ldm.ldm_component(kind, loaded, sources) for kind in ("unet", "vae")}
    for encoder in spec.text_encoders:
        parts[encoder.name] = ldm.text_encoder(encoder, loaded, sources)
    assert {name: sum(p.numel() for p in part.parameters())
            for name, part in parts.items()} == counts


def test_the_streamed_random_checkpoint_is_a_safetensors_file(family_models, tmp_path):
    """bench/'s full-size files are written tensor by tensor; safetensors reads them back."""
    layout = load_file(family_models["sdxl"]["safetensors"])
    path = write_random_checkpoint(tmp_path / "r.safetensors", dtype=torch.float16, seed=3,
                                   layout=layout)
    back = load_file(path)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in layout.items()}
    assert {v.dtype for v in back.values()} == {torch.float16}
    again = write_random_checkpoint(tmp_path / "r.ckpt", dtype=torch.float16, seed=3,
                                    layout=layout)
    pickled = torch.load(again, weights_only=True)["state_dict"]
    assert all(torch.equal(pickled[k], back[k]) for k in back)


def test_the_shipped_configs_are_what_family_assets_derives():
    assert family_assets.main(["--check"]) == 0
    for family in family_assets.YAML:
        for relative, content in family_assets.derive(family).items():
            shipped = json.loads((FAMILIES[family].assets / relative).read_text())
            assert shipped == content, f"{family}/{relative}"


PROMPTS = ("a photo of an astronaut riding a horse on mars",
           "café crème brûlée, (masterpiece:1.2), [[ugly]] 東京 🌸",
           " ".join(["a very long prompt"] * 30))


def test_openclip_tokenizers_are_clips_bpe_padded_with_token_zero():
    """SD 2.x's tokenizer and SDXL's second are OpenCLIP's: the same BPE table as CLIP ViT-L's
    (sdtui/assets/sd1/tokenizer) but padded with token 0, "!", where OpenAI's CLIP pads with
    <|endoftext|>. Checked against open_clip's own tokenizer and model configs."""
    from sdtui.devtools.clip_vocab import open_clip_bpe_path

    configs = open_clip_bpe_path().parent / "model_configs"
    for name in ("ViT-H-14", "ViT-bigG-14"):  # no tokenizer of their own: the default BPE
        text = json.loads((configs / f"{name}.json").read_text())["text_cfg"]
        assert not {"hf_tokenizer_name", "tokenizer_kwargs"} & set(text)
    reference = open_clip_tokenizer()(list(PROMPTS), context_length=77).tolist()
    assert reference[0][-1] == 0  # open_clip pads with 0
    assets = {f: FAMILIES[f].assets for f in FAMILIES}
    for folder in (assets["sd2"] / "tokenizer", assets["sdxl"] / "tokenizer_2"):
        ours = ldm.tokenizer(folder)
        assert ours.pad_token == "!" and ours.pad_token_id == 0
        assert ours(list(PROMPTS), padding="max_length", max_length=77,
                    truncation=True).input_ids == reference
    for folder in (assets["sd1"] / "tokenizer", assets["sdxl"] / "tokenizer"):
        ours = ldm.tokenizer(folder)
        ids = ours(list(PROMPTS), padding="max_length", max_length=77, truncation=True).input_ids
        assert ours.pad_token_id == 49407
        assert [[i if i != 49407 else 0 for i in row] for row in ids] == [
            [i if i != 49407 else 0 for i in row] for row in reference]


def test_sd2_yaml_parameterization_v_sets_v_prediction(family_models, tmp_path):
    original = family_models["sd2"]["safetensors"]
    copy = Path(shutil.copy(original, tmp_path / "v2.safetensors"))
    shutil.copytree(original.with_name("sd2.config"), tmp_path / "v2.config")
    shutil.rmtree(tmp_path / "v2.config" / "scheduler")  # the yaml decides
    yaml = (FAMILIES["sd2"].assets / "v2-inference-v.yaml").read_text()
    (tmp_path / "v2.yaml").write_text(yaml.replace('parameterization: "v"', ""))
    shutil.rmtree(tmp_path / "v2.config" / "unet")  # the yaml's UNet is full size:
    shutil.copytree(original.with_name("sd2.config") / "unet", tmp_path / "v2.config" / "unet")
    assert load_model(str(copy)).prediction == "epsilon"
    (tmp_path / "v2.yaml").write_text(yaml)
    model = load_model(str(copy))
    assert model.prediction == "v_prediction" and model.default_size == 768
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"


def test_sd2_without_a_sidecar_scheduler_asks_the_unet(family_models, tmp_path):
    """No sidecar says: A1111's test of the UNet decides (an epsilon model returns about its
    input at the last timestep, a v model far less)."""
    original = family_models["sd2"]["safetensors"]
    state = load_file(original)
    shutil.copytree(original.with_name("sd2.config"), tmp_path / "a.config")
    shutil.rmtree(tmp_path / "a.config" / "scheduler")
    for name, shift in (("eps", 0.0), ("v", -5.0)):
        tweaked = dict(state)
        conv_out = "model.diffusion_model.out.2."
        tweaked[conv_out + "weight"] = torch.zeros_like(state[conv_out + "weight"])
        tweaked[conv_out + "bias"] = torch.full_like(state[conv_out + "bias"], 0.5 + shift)
        save_file(tweaked, tmp_path / "a.safetensors")
        expected = "v_prediction" if name == "v" else "epsilon"
        assert load_model(str(tmp_path / "a.safetensors")).prediction == expected


def test_a_v_pred_marker_in_the_file_sets_v_prediction(family_models, tmp_path):
    original = family_models["sdxl"]["safetensors"]
    state = {**load_file(original), "v_pred": torch.tensor([])}
    save_file(state, tmp_path / "xl.safetensors")
    shutil.copytree(original.with_name("sdxl.config"), tmp_path / "xl.config")
    shutil.rmtree(tmp_path / "xl.config" / "scheduler")
    model = load_model(str(tmp_path / "xl.safetensors"))
    assert model.prediction == "v_prediction" and model.warnings == []


def test_unexpected_tensors_are_reported_not_dropped(family_models, tmp_path):
    original = family_models["sd1"]["safetensors"]
    state = {**load_file(original),
             "first_stage_model.decoder.extra_head.weight": torch.ones(3),
             "model_ema.decay": torch.tensor(0.9999), "betas": torch.ones(1000)}
    save_file(state, tmp_path / "tiny.safetensors")
    shutil.copytree(original.with_name("tiny.config"), tmp_path / "tiny.config")
    model = load_model(str(tmp_path / "tiny.safetensors"))
    (warning,) = model.warnings  # the EMA and DDPM leftovers are expected, not reported
    assert "1 tensors that no SD 1.x component uses were ignored" in warning
    assert "first_stage_model.decoder.extra_head.weight" in warning


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_inpainting_checkpoints_are_detected_at_load(family, tmp_path):
    for fmt, name in (("safetensors", "inpaint.safetensors"), ("diffusers", "inpaint")):
        path = write_tiny_model(tmp_path / name, fmt, seed=1, family=family, inpainting=True)
        model = load_model(str(path))
        assert model.inpainting and model.info()["inpainting"] is True
        assert model.pipe.unet.config.in_channels == 9
        assert model.pipeline_class("inpaint").__name__ == FAMILIES[family].pipelines.inpaint


def test_layouts_of_other_models_are_named(tmp_path):
    cases = {
        "refiner": ({"conditioner.embedders.0.model.ln_final.weight": torch.ones(2),
                     "model.diffusion_model.out.2.bias": torch.ones(2)}, "an SDXL refiner"),
        "lora": ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight":
                  torch.ones(2)}, "a LoRA"),
        "vae": ({"encoder.down.0.block.0.norm1.weight": torch.ones(2)}, "a standalone VAE"),
    }
    for name, (state, what) in cases.items():
        save_file(state, tmp_path / f"{name}.safetensors")
        with pytest.raises(ModelInvalid, match=f"{name}.safetensors is {what}"):
            load_model(str(tmp_path / f"{name}.safetensors"))


def test_a_diffusers_layout_lora_or_vae_is_named(tiny_diffusers, tmp_path):
    """What diffusers itself saves: a LoRA (save_lora_weights, from a kohya file it loaded) and
    a VAE (AutoencoderKL.save_pretrained), each given as the model."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    from sdtui.devtools.tiny_lora import write_tiny_lora

    pipe = StableDiffusionPipeline.from_pretrained(tiny_diffusers, safety_checker=None,
                                                   requires_safety_checker=False)
    kohya = write_tiny_lora(tiny_diffusers, tmp_path / "kohya.safetensors")
    pipe.load_lora_weights(str(kohya), adapter_name="tiny")
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", **{
        f"{name}_lora_layers": get_peft_model_state_dict(getattr(pipe, name), adapter_name="tiny")
        for name in ("unet", "text_encoder")})
    AutoencoderKL.from_pretrained(tiny_diffusers, subfolder="vae").save_pretrained(
        tmp_path / "vae")
    for path, what in ((tmp_path / "lora" / "pytorch_lora_weights.safetensors",
                        "a LoRA in diffusers' layout"),
                       (tmp_path / "vae" / "diffusion_pytorch_model.safetensors",
                        "a standalone VAE in diffusers' layout")):
        with pytest.raises(ModelInvalid, match=f"{path.name} is {what}"):
            load_model(str(path))


def test_a_refusal_names_the_family_it_detected(family_models, tmp_path):
    state = {k: v for k, v in load_file(family_models["sdxl"]["safetensors"]).items()
             if not k.startswith("conditioner.embedders.1.")}
    save_file(state, tmp_path / "half.safetensors")
    with pytest.raises(ModelInvalid, match="incomplete SDXL checkpoint: it has no OpenCLIP "
                                           "ViT-bigG text encoder weights") as info:
        load_model(str(tmp_path / "half.safetensors"))
    assert info.value.family == "sdxl"
    alone = Path(shutil.copy(family_models["sd2"]["ckpt"], tmp_path / "alone.ckpt"))
    with pytest.raises(ModelInvalid, match=r"\(SD 2.x\): its unet weights do not fit the unet "
                                           r"config from the shipped SD 2.x configs"):
        load_model(str(alone))
