"""SD 3.5 as ComfyUI users keep it: a transformer (Stability's sd3.5_large.safetensors, VAE
inside, or city96's GGUF in ComfyUI-GGUF's 'sd3' layout), clip_l.safetensors, clip_g.safetensors,
an optional T5 and the VAE; `--model FOLDER` or `--model TRANSFORMER_FILE`. Against references we
did not write: Stability's MMDiT and the tiny folder's own components, `gguf.quants.dequantize`
mapped by diffusers' own converter, and diffusers' StableDiffusion3Pipeline."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.modelfiles import detect_format, model_files
from sdtui.modelsets import find_set
from tests.helpers_flux_files import computed_weights_differ, dequantized, gguf, write_sd3_gguf
from tests.helpers_generation import SIZE, assert_same, images_of, pixels, reference_pipeline
from tests.helpers_sd3_files import linked_copy, tiny_pipeline, write_sd3_set
from tests.test_sd3_files import (
    MMDITX_AS_DIFFUSERS,
    NEGATIVE,
    PROMPT,
    prefixed,
    stability_mmditx,
)
from tests.test_worker import WorkerProcess

REPO = Path(__file__).resolve().parents[1]
Q = gguf().GGMLQuantizationType
# Q8_0 keeps 8 bits a weight with a float16 scale a block of 32: measured, the tiny model's
# image moves by 1 level at most, 0.07 on average (Q5_1: 6 and 0.56; Q4_0: 12 and 1.29).
GGUF_MAX_LEVELS = 4
GGUF_MEAN_LEVELS = 0.5
STEPS, CFG, SEED = 2, 4.0, 3


@pytest.fixture(scope="module")
def mmditx() -> torch.nn.Module:
    return stability_mmditx()


@pytest.fixture(scope="module")
def pipe(tiny_sd3):
    return tiny_pipeline(tiny_sd3["medium"])


@pytest.fixture(scope="module")
def sets(tiny_sd3, mmditx, pipe, tmp_path_factory) -> dict[str, Path]:
    """Two sets' transformer files. gguf: a Q8_0 GGUF MMDiT with the two CLIPs and the Hub's VAE
    as sd3.5_vae.safetensors, no T5; safetensors: Stability's sd3.5_large.safetensors (MMDiT and
    VAE) with the two CLIPs and t5xxl_fp8_e4m3fn.safetensors."""
    root = tmp_path_factory.mktemp("sd3-sets")
    return {"gguf": write_sd3_set(root / "sd3.5_large", tiny_sd3["medium"], mmditx, "gguf",
                                  vae="diffusers", pipe=pipe),
            "safetensors": write_sd3_set(root / "sd3.5_large_fp8", tiny_sd3["medium"], mmditx,
                                         "safetensors", "fp8", pipe=pipe)}


def diffusers_transformer(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Stability-layout weights in diffusers' SD3Transformer2DModel, by diffusers' converter."""
    import diffusers
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    transformer = diffusers.SD3Transformer2DModel(**MMDITX_AS_DIFFUSERS)
    transformer.load_state_dict(convert_sd3_transformer_checkpoint_to_diffusers(dict(state)))
    return transformer.eval()


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q5_1, Q.Q4_0, Q.Q6_K], ids=lambda q: q.name)
def test_a_gguf_mmdit_stays_quantized_and_computes_with_dequantize_bit_for_bit(
        tmp_path, mmditx, qtype):
    from sdtui.worker.sd3_files import load_transformer

    path = write_sd3_gguf(prefixed(mmditx, "model.diffusion_model."),
                          tmp_path / f"sd3.5_large-{qtype.name}.gguf", qtype)

    transformer = load_transformer(path, torch.float32, "gguf")

    # city96's layout: the blocks' linears quantized, the embedders and final layer not.
    kinds = {name: getattr(p, "quant_type", None) for name, p in transformer.named_parameters()}
    assert kinds["transformer_blocks.0.ff.net.2.weight"] == qtype
    assert kinds["context_embedder.weight"] is None and kinds["proj_out.weight"] is None
    expected = diffusers_transformer_state(path)
    assert transformer.state_dict().keys() == expected.keys()
    assert computed_weights_differ(transformer, expected) == []
    assert torch.equal(transformer.pos_embed.pos_embed, expected["pos_embed.pos_embed"])


def diffusers_transformer_state(path: Path) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    return convert_sd3_transformer_checkpoint_to_diffusers(dequantized(path))


@pytest.mark.parametrize(("vae", "t5"), [("inside", "fp8"), ("diffusers", "gguf"),
                                         ("ldm", None)])
def test_each_component_of_a_set_computes_what_its_reference_does(
        tmp_path, tiny_sd3, mmditx, pipe, sets, vae, t5):
    from sdtui.worker.sd3_files import set_components

    path = sets["safetensors"] if (vae, t5) == ("inside", "fp8") else write_sd3_set(
        tmp_path / "set", tiny_sd3["medium"], mmditx, "safetensors", t5, vae, pipe=pipe)
    model_set = find_set(path.parent)
    assert model_set.inside == (("vae",) if vae == "inside" else ())

    parts = set_components(model_set, torch.float32)

    generator = torch.Generator().manual_seed(1)
    x, context = torch.randn(1, 16, 8, 8, generator=generator), torch.randn(1, 7, 64)
    pooled, t = torch.randn(1, 64, generator=generator), torch.tensor([700.0])
    ids = torch.tensor([[49406, 320, 1125, 539, 49407]])
    z = torch.randn(1, 16, 8, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(
            parts["transformer"](hidden_states=x, timestep=t, encoder_hidden_states=context,
                                 pooled_projections=pooled).sample,
            mmditx(x, t, y=pooled, context=context), atol=1e-5, rtol=0)
        for name in ("text_encoder", "text_encoder_2"):
            got, expected = parts[name](ids), getattr(pipe, name)(ids)
            torch.testing.assert_close(got.text_embeds, expected.text_embeds)
        assert parts["vae"].config.scaling_factor == 1.5305
        torch.testing.assert_close(parts["vae"].decode(z).sample, pipe.vae.decode(z).sample,
                                   atol=1e-5, rtol=0)
        if t5 is None:
            assert parts["text_encoder_3"] is None
        else:
            tokens = torch.tensor([[4, 8, 15, 16, 1]])
            # fp8: the reference holds the same rounded weights; Q8_0: a few parts in a hundred.
            reference = copy.deepcopy(pipe.text_encoder_3)
            if t5 == "fp8":
                reference.load_state_dict({
                    k: v.to(torch.float8_e4m3fn).float() if v.ndim > 1 else v
                    for k, v in reference.state_dict().items()})
            expected = reference(tokens)[0]
            torch.testing.assert_close(parts["text_encoder_3"](tokens)[0], expected,
                                       atol=1e-5 if t5 == "fp8" else 0.05 * expected.abs().max(),
                                       rtol=0)


def test_a_set_named_turbo_is_large_turbo_and_with_t5_says_nothing(tmp_path, sets):
    """Large Turbo ships Large's configs: a set is told apart by its folder's name (or its
    transformer's), as Stability names the release. T5 present: no note in `ready`."""
    from sdtui.worker.models import load_model

    folder = linked_copy(sets["safetensors"].parent, tmp_path / "sd3.5_large_turbo", "")
    model = load_model(str(folder))
    assert (model.family.id, model.format, model.guidance) == ("sd3", "set", "none")
    assert model.pipe.text_encoder_3 is not None and model.info()["warnings"] == []


@pytest.fixture(scope="module")
def gguf_set(sets) -> Path:
    return sets["gguf"].parent


@pytest.fixture(scope="module")
def worker(gguf_set):
    started = WorkerProcess(gguf_set)
    try:
        started.client.wait_ready(timeout=600)
        yield started
    finally:
        started.stop()


def reference(tiny_sd3, transformer: torch.nn.Module) -> np.ndarray:
    """diffusers' StableDiffusion3Pipeline on the tiny folder's CLIPs and VAE, T5 left out, with
    `transformer`."""
    pipe = reference_pipeline(tiny_sd3["medium"], "StableDiffusion3Pipeline",
                              transformer=transformer, text_encoder_3=None, tokenizer_3=None)
    image = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE,
                 num_inference_steps=STEPS, guidance_scale=CFG,
                 generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    return np.asarray(image.convert("RGB"), dtype=int)


@pytest.fixture(scope="module")
def image(worker) -> dict:
    (drawn,) = images_of(list(worker.client.generate(
        prompt=PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE, steps=STEPS, cfg=CFG,
        seed=SEED, preview_every=0)))
    return drawn


def test_a_gguf_set_without_t5_draws_the_pixels_of_sd3_pipeline_without_t5(
        worker, image, gguf_set, tiny_sd3):
    """The weights it computes with are gguf's dequantized ones: with those, diffusers' own
    pipeline with text_encoder_3=None draws the same pixels. `ready` says once that T5 is out."""
    ready = worker.client.ready
    assert (ready["family"], ready["format"], ready["guidance"]) == ("sd3", "set", "cfg")
    (note,) = ready["warnings"]
    assert note == (f"model {gguf_set} (SD 3.5) has no T5-XXL text encoder: it runs on its "
                    "CLIP-L text encoder and CLIP-G text encoder alone, which follow the prompt "
                    "less closely")
    (transformer,) = gguf_set.glob("*.gguf")
    assert_same(image, reference(tiny_sd3, diffusers_transformer(dequantized(transformer))))


def test_a_gguf_sets_image_is_within_quantization_error_of_the_unquantized_one(
        image, tiny_sd3, mmditx):
    unquantized = reference(tiny_sd3, diffusers_transformer(mmditx.state_dict()))
    diff = np.abs(pixels(image) - unquantized)
    assert diff.max() <= GGUF_MAX_LEVELS and diff.mean() <= GGUF_MEAN_LEVELS, (
        f"up to {diff.max()} levels, {diff.mean():.2f} on average")
    assert diff.max() > 0  # quantized for real


@pytest.mark.parametrize(("transformer", "missing", "says"), [
    ("gguf", "clip_l.safetensors", "has no CLIP-L text encoder (clip_l*.safetensors) beside "
     "sd3.5_large-Q8_0.gguf — put clip_l.safetensors (Hugging Face: "
     "stabilityai/stable-diffusion-3.5-large, text_encoders/)"),
    ("gguf", "clip_g.safetensors", "has no CLIP-G text encoder (clip_g*.safetensors) beside "
     "sd3.5_large-Q8_0.gguf — put clip_g.safetensors (Hugging Face: "
     "stabilityai/stable-diffusion-3.5-large, text_encoders/)"),
    ("gguf", "sd3.5_vae.safetensors", "has no VAE (sd3*vae*.safetensors) beside "
     "sd3.5_large-Q8_0.gguf — put sd3.5_vae.safetensors (Hugging Face: "
     "stabilityai/stable-diffusion-3.5-large: vae/diffusion_pytorch_model.safetensors, renamed)"),
    ("safetensors", "clip_g.safetensors", "has no CLIP-G text encoder (clip_g*.safetensors) "
     "beside sd3.5_large.safetensors"),
])
def test_a_set_with_a_part_missing_is_refused_naming_it(tmp_path, sets, transformer, missing,
                                                        says):
    folder = linked_copy(sets[transformer].parent, tmp_path / "set", missing)
    for model in (folder, folder / sets[transformer].name):
        with pytest.raises(BadInput) as caught:
            detect_format(model)
        message = f"{caught.value} — {caught.value.fix}"
        assert f"SD 3.5 model set {folder} {says}" in message and "\n" not in message
        assert caught.value.exit_code == EXIT_BAD_INPUT


def test_the_command_line_refuses_an_incomplete_set_before_creating_anything(tmp_path, sets):
    folder = linked_copy(sets["gguf"].parent, tmp_path / "set", "clip_g.safetensors")
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "sdtui", "--no-ui", "--model", str(folder / sets["gguf"].name),
         "--prompt", "a barn"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={"SDTUI_STATE_DIR": str(state), "SDTUI_CONFIG_DIR": str(tmp_path / "config"),
             "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "has no CLIP-G text encoder" in result.stderr
    assert "stabilityai/stable-diffusion-3.5-large" in result.stderr
    assert "Traceback" not in result.stderr
    assert not state.exists() or not any(state.rglob("*.json"))


@pytest.mark.parametrize(("kind", "named"), [("gguf", "folder"),
                                             ("safetensors", "transformer file")])
def test_every_file_of_a_set_travels_and_only_those(sets, kind, named):
    """T5 optional: the GGUF set has none; the VAE inside Stability's file needs no VAE file."""
    transformer = sets[kind]
    model = transformer.parent if named == "folder" else transformer
    prefix = model.name + "/" if named == "folder" else ""
    names = {name for _, name in model_files(model)}
    assert names == {prefix + file.relative_to(transformer.parent).as_posix()
                     for file in transformer.parent.rglob("*") if file.is_file()}
