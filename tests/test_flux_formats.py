"""FLUX.1 generates end to end, in the real worker process, from every file format people have:
BFL's single file among its parts ([schnell] and [dev], `--model TRANSFORMER_FILE`), the split
set's folder, a GGUF transformer, a T5 GGUF and an all-in-one file. Tokenizers and the
scheduler come from FLUX.1's assets (the tiny T5's own vocabulary from the `S.config/`
sidecar, as a fine-tune's would).

The twin each is compared with is a diffusers folder holding the same weights (saved by
diffusers' own `save_pretrained`, with the released scheduler configs from tiny_flux, not
sdtui's assets), drawn by diffusers' own FluxPipeline: pixel-equal for the unquantized files,
within a stated tolerance for Q8_0 GGUF. That each component computes what BFL's and
transformers' references compute is tests/test_flux_files_sets.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdtui.devtools import tiny_flux
from sdtui.worker.families.base import ASSETS
from tests.helpers_flux_files import (
    bfl_autoencoder,
    bfl_flux,
    comfy_clip_l,
    comfy_t5,
    gguf,
    state_dict,
    stored_as,
    write_gguf,
    write_t5_gguf,
)
from tests.helpers_generation import images_of, pixels
from tests.test_flux_pipelines import PROMPT, assert_same, reference
from tests.test_worker import WorkerProcess

pytestmark = pytest.mark.slow
SIZE = 64
# Q8_0 keeps 8 bits per weight with a float16 scale per 32: the image moves by a few levels.
GGUF_MAX_LEVELS = 12
GGUF_MEAN_LEVELS = 2.0


def references(variant: str) -> dict[str, torch.nn.Module]:
    """BFL's transformer and autoencoder, and CLIP-L and T5 encoders whose vocabularies are the
    real CLIP one and the tiny T5 tokenizer's, all narrow and random."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(11)
    clip = CLIPTextModel(CLIPTextConfig(**tiny_flux.TINY_CLIP)).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tiny_flux.t5_tokenizer()),
                                 **tiny_flux.TINY_T5)).eval()
    flux = bfl_flux(guidance=variant == "dev", context_in_dim=t5.config.d_model,
                    vec_in_dim=clip.config.hidden_size)
    return {"flux": flux, "clip": clip, "t5": t5, "ae": bfl_autoencoder()}


def sidecar(beside: Path, refs: dict[str, torch.nn.Module]) -> None:
    """What the weights cannot say about these narrow encoders: CLIP's head count and the tiny
    T5's vocabulary."""
    config = beside.with_name(beside.stem + ".config")
    (config / "text_encoder").mkdir(parents=True)
    (config / "text_encoder" / "config.json").write_text(json.dumps(
        {"num_attention_heads": refs["clip"].config.num_attention_heads}))
    tiny_flux.t5_tokenizer().save_pretrained(config / "tokenizer_2")


def write_set(folder: Path, variant: str, refs: dict[str, torch.nn.Module],
              transformer: str = "safetensors", t5: str = "safetensors", qtype=None) -> Path:
    """A split set as ComfyUI users keep it; returns its transformer file. transformer:
    "safetensors" (BFL's flux1-VARIANT.safetensors) or "gguf" (Q8_0, or `qtype`); t5:
    "safetensors" (t5xxl_fp16.safetensors, stored in float32), "fp8" (t5xxl_fp8_e4m3fn) or
    "gguf" (t5-v1_1-xxl-encoder-Q8_0.gguf)."""
    folder.mkdir(parents=True)
    name = folder / f"flux1-{variant}.{transformer}"
    if transformer == "gguf":
        write_gguf(state_dict(refs["flux"]), name, qtype or gguf().GGMLQuantizationType.Q8_0)
    else:
        save_file(state_dict(refs["flux"]), name)
    save_file(comfy_clip_l(refs["clip"]), folder / "clip_l.safetensors")
    if t5 == "gguf":
        write_t5_gguf(refs["t5"], folder / "t5-v1_1-xxl-encoder-Q8_0.gguf",
                      gguf().GGMLQuantizationType.Q8_0)
    elif t5 == "fp8":
        save_file(comfy_t5(refs["t5"], torch.float8_e4m3fn),
                  folder / "t5xxl_fp8_e4m3fn.safetensors")
    else:
        save_file(comfy_t5(refs["t5"], torch.float32), folder / "t5xxl_fp16.safetensors")
    save_file(state_dict(refs["ae"]), folder / "ae.safetensors")
    sidecar(name, refs)
    return name


def write_all_in_one(path: Path, refs: dict[str, torch.nn.Module],
                     dtype: torch.dtype = torch.float32) -> Path:
    """An all-in-one checkpoint, its weights stored in `dtype` as the released ones are."""
    parts = {"model.diffusion_model.": state_dict(refs["flux"]),
             "text_encoders.clip_l.transformer.": comfy_clip_l(refs["clip"]),
             "text_encoders.t5xxl.transformer.": comfy_t5(refs["t5"], torch.float32),
             "vae.": state_dict(refs["ae"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + key: value for prefix, state in parts.items()
               for key, value in stored_as(state, dtype).items()}, path)
    sidecar(path, refs)
    return path


def write_twin(folder: Path, variant: str, files: Path) -> Path:
    """The same weights as a diffusers folder, with the released scheduler config and the
    tokenizers the files' sidecar names."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTokenizer

    from sdtui.worker.flux_parts import components_from_files

    FluxPipeline(**components_from_files(files, torch.float32),
                 tokenizer=CLIPTokenizer.from_pretrained(ASSETS / "sd1" / "tokenizer"),
                 tokenizer_2=tiny_flux.t5_tokenizer(),
                 scheduler=FlowMatchEulerDiscreteScheduler(**tiny_flux.SCHEDULERS[variant])
                 ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux-formats")
    out: dict[str, Path] = {}
    refs = {variant: references(variant) for variant in ("schnell", "dev")}
    for variant, weights in refs.items():
        out[f"{variant} file"] = write_set(root / f"set-{variant}", variant, weights)
        out[f"{variant} twin"] = write_twin(root / f"twin-{variant}", variant,
                                            out[f"{variant} file"])
    dev = refs["dev"]
    out["dev folder"] = out["dev file"].parent
    out["dev gguf"] = write_set(root / "set-gguf", "dev", dev, transformer="gguf")
    out["dev t5 gguf"] = write_set(root / "set-t5-gguf", "dev", dev, t5="gguf").parent
    out["dev all-in-one"] = write_all_in_one(root / "aio" / "flux1-dev-aio.safetensors", dev)
    return out


@pytest.fixture(scope="module")
def workers(models: dict[str, Path]):
    started = {name: WorkerProcess(path) for name, path in models.items()
               if not name.endswith("twin")}
    for w in started.values():
        w.client.wait_ready(timeout=600)
    yield started
    for w in started.values():
        w.stop()


def generate(worker, prompt: str = PROMPT, **params) -> dict:
    """No sampler named: FLUX.1's own (Euler, Simple)."""
    (image,) = images_of(list(worker.client.generate(
        prompt=prompt, width=SIZE, height=SIZE, preview_every=0, **params)))
    return image


@pytest.fixture(scope="module")
def dev_reference(models: dict[str, Path]) -> np.ndarray:
    """The [dev] twin's drawing that every [dev] format is compared with (drawn once)."""
    return reference(models["dev twin"], seed=5, num_inference_steps=3, width=SIZE,
                     height=SIZE, guidance_scale=3.5)


def test_bfl_schnell_file_draws_the_pixels_of_its_diffusers_twin(workers, models):
    ours = generate(workers["schnell file"], seed=3)  # no steps: [schnell]'s own 4
    assert workers["schnell file"].client.ready["format"] == "safetensors"
    assert (ours["params"]["family"], ours["params"]["steps"]) == ("flux1", 4)
    assert_same(ours, reference(models["schnell twin"], seed=3, num_inference_steps=4,
                                width=SIZE, height=SIZE, guidance_scale=0.0))


@pytest.mark.parametrize("named", ["dev file", "dev folder", "dev all-in-one"])
def test_bfl_dev_files_draw_the_pixels_of_their_diffusers_twin(workers, dev_reference, named):
    ready = workers[named].client.ready
    assert (ready["family"], ready["guidance"]) == ("flux1", "embedded")
    ours = generate(workers[named], seed=5, steps=3)
    assert ours["params"]["guidance"] == 3.5
    assert_same(ours, dev_reference)


@pytest.mark.parametrize("named", ["dev gguf", "dev t5 gguf"])
def test_gguf_parts_draw_their_twin_within_quantization_error(workers, dev_reference, named):
    ours = pixels(generate(workers[named], seed=5, steps=3))
    diff = np.abs(ours - dev_reference)
    assert diff.max() <= GGUF_MAX_LEVELS and diff.mean() <= GGUF_MEAN_LEVELS, (
        f"{named}: up to {diff.max()} levels, {diff.mean():.2f} on average")


def test_the_tiny_models_prompt_tokens_reach_the_image(workers):
    """A sanity check that the twin comparisons compare drawn images, not blanks: another
    prompt draws another image."""
    a = pixels(generate(workers["dev file"], seed=5, steps=3))
    b = pixels(generate(workers["dev file"], PROMPT + " at night", seed=5, steps=3))
    assert not np.array_equal(a, b)


def test_a_set_without_t5s_tokenizer_is_refused_in_one_line(models, tmp_path):
    """T5's tokenizer is not shipped yet: a set with none beside it says where to put it."""
    import shutil

    from sdtui.worker.checkpoint import ModelInvalid
    from sdtui.worker.models import load_model

    shutil.copytree(models["schnell file"].parent, tmp_path / "set")
    transformer = tmp_path / "set" / models["schnell file"].name
    shutil.rmtree(tmp_path / "set" / "flux1-schnell.config" / "tokenizer_2")
    with pytest.raises(ModelInvalid, match=r"has no T5 tokenizer: put .* in "
                       r".*flux1-schnell\.config/tokenizer_2/") as caught:
        load_model(str(tmp_path / "set"))
    assert "\n" not in str(caught.value) and transformer.exists()


def test_a_load_parses_each_files_header_once(models, monkeypatch):
    """The format check, the set's resolution, the memory check (run here: a T4's memory is
    faked) and the loader all ask for the set's headers; each file's is parsed once."""
    from collections import Counter

    import gguf as gguf_package

    from sdtui import headers
    from sdtui.worker import memory_fit
    from sdtui.worker.models import load_model

    parsed: Counter = Counter()

    def counted(kind, parse):
        def spy(file, *args, **kwargs):
            parsed[kind, Path(getattr(file, "name", file)).name] += 1
            return parse(file, *args, **kwargs)
        return spy

    for name in ("_safetensors_table", "_gguf_architecture", "_gguf_tensor_names"):
        monkeypatch.setattr(headers, name, counted(name, getattr(headers, name)))
    monkeypatch.setattr(gguf_package, "GGUFReader", counted("GGUFReader",
                                                            gguf_package.GGUFReader))
    monkeypatch.setattr(memory_fit, "device_memory", lambda device: ("Tesla T4", 15_828_320_256))

    folder = models["dev gguf"].parent
    assert load_model(str(folder)).memory is not None  # the memory check ran
    assert {name for _, name in parsed} == {f.name for f in folder.iterdir() if f.is_file()}
    assert {what: n for what, n in parsed.items() if n > 1} == {}
