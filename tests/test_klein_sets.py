"""FLUX.2 Klein as ComfyUI users keep it: BFL's original-layout transformer
(flux-2-klein-4b.safetensors, or a city96-layout .gguf of it), qwen_3_4b.safetensors,
flux2-vae.safetensors and Qwen3's tokenizer in the transformer's sidecar. Checked against
references we did not write: diffusers' own converter (the original layout is written by its
inverse, checked against it), Flux2KleinPipeline's pixels on the diffusers folder the set was
written from, and the `gguf` package's dequantize. Klein base runs at its own CFG (4) when the
request names none."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sdtui import protocol
from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.modelfiles import detect_format, model_files
from tests.helpers_flux_files import dequantized, gguf, refused_before_anything
from tests.helpers_generation import SIZE, assert_same, one_image, running_workers
from tests.helpers_klein_files import original_transformer, write_klein_set
from tests.test_klein_pipelines import PROMPT, reference

BASE = "flux-2-klein-base-4b.safetensors"
GGUF = "flux-2-klein-4b-Q8_0.gguf"


def _convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers,
    )

    return convert_flux2_transformer_checkpoint_to_diffusers(dict(state))


@pytest.fixture(scope="module")
def sets(tiny_klein, tmp_path_factory) -> dict[str, Path]:
    """Each set's transformer file: base (BFL's safetensors) and [klein] (a Q8_0 GGUF)."""
    root = tmp_path_factory.mktemp("klein-sets")
    return {"base": write_klein_set(tiny_klein["base"], root / "base", BASE),
            "gguf": write_klein_set(tiny_klein["distilled"], root / "gguf", GGUF,
                                    qtype=gguf().GGMLQuantizationType.Q8_0)}


def test_the_original_layout_is_diffusers_converter_backwards(tiny_klein):
    from diffusers import Flux2Transformer2DModel

    state = Flux2Transformer2DModel.from_pretrained(tiny_klein["base"] / "transformer").state_dict()
    original = original_transformer(state)
    assert "single_stream_modulation.lin.weight" in original
    assert "double_blocks.0.img_attn.qkv.weight" in original
    back = _convert(original)
    assert sorted(back) == sorted(state)
    different = [key for key in state if not torch.equal(back[key], state[key])]
    assert not different, f"diffusers' converter maps these back differently: {different[:5]}"


def test_a_set_folder_draws_the_pipelines_pixels_at_klein_base_cfg(sets, tiny_klein):
    with running_workers({"base": sets["base"].parent}) as workers:
        worker = workers["base"]
        ours = one_image(worker, PROMPT, seed=5, steps=2)  # no cfg: the family's
        ready = worker.client.ready
    ref = reference(tiny_klein["base"], seed=5, num_inference_steps=2, width=SIZE, height=SIZE,
                    guidance_scale=4.0)
    assert_same(ours, ref)
    params = ours["params"]
    assert (params["family"], params["cfg"], params["guidance"]) == ("flux2-klein", 4.0, None)
    assert (ready["format"], ready["default_cfg"]) == ("set", 4.0)
    # The cfg the request leaves out is not the protocol's 7.5, in pixels too.
    other = reference(tiny_klein["base"], seed=5, num_inference_steps=2, width=SIZE,
                      height=SIZE, guidance_scale=protocol.DEFAULT_CFG)
    assert not np.array_equal(other, ref)


def test_a_model_names_none_the_cfg_is_its_own_or_the_protocols():
    base = {"sampling": "flow", "default_steps": 50, "default_cfg": 4.0}
    assert protocol.with_model_defaults(base, {"cfg": None})["cfg"] == 4.0
    assert protocol.with_model_defaults(base, {"cfg": 0.0})["cfg"] == 0.0
    assert protocol.with_model_defaults({}, {"cfg": None})["cfg"] == protocol.DEFAULT_CFG == 7.5
    assert protocol.request("generate", id="a", prompt="p")["cfg"] is None


def test_the_transformer_file_names_its_set_and_every_part_travels(sets, tmp_path):
    from sdtui.worker.klein_files import load_transformer

    transformer = sets["base"]
    assert detect_format(transformer) == "safetensors"
    assert detect_format(transformer.parent) == "set"
    travels = [name for _, name in model_files(transformer)]
    assert travels[0] == BASE  # the worker is pointed at the first
    assert {"flux2-vae.safetensors", "qwen_3_4b.safetensors",
            "flux-2-klein-base-4b.config/tokenizer/tokenizer.json",
            "flux-2-klein-base-4b.config/vae/config.json"} <= set(travels)
    # ComfyUI's copy keeps the same keys under model.diffusion_model.
    from safetensors.torch import load_file, save_file

    prefixed = shutil.copytree(transformer.parent, tmp_path / "comfy") / BASE
    save_file({"model.diffusion_model." + k: v for k, v in load_file(transformer).items()},
              prefixed)
    ours = load_transformer(prefixed, torch.float32, "safetensors").state_dict()
    bfl = load_transformer(transformer, torch.float32, "safetensors").state_dict()
    assert sorted(ours) == sorted(bfl) and all(torch.equal(ours[k], bfl[k]) for k in bfl)


def test_a_gguf_transformers_weights_equal_gguf_dequantize_bit_for_bit(sets):
    from sdtui.worker.gguf_files import dequantize
    from sdtui.worker.klein_files import load_transformer

    path = sets["gguf"]
    assert detect_format(path) == "gguf"
    transformer = load_transformer(path, torch.float32, "gguf")
    expected = _convert(dequantized(path))  # the gguf package's values, diffusers' names
    quantized = []
    for name, module in transformer.named_modules():
        weight = getattr(module, "weight", None)
        if not hasattr(weight, "quant_type"):
            continue
        # The weights the layer computes with: x @ W.T + b at x = I is W.T plus b, exactly.
        with torch.no_grad():
            eye = torch.eye(module.in_features)
            used = module(eye) - (module.bias if module.bias is not None else 0)
        assert torch.equal(used.T, expected[name + ".weight"]), (
            f"{name} computes with other weights than gguf.quants.dequantize gives")
        quantized.append(name)
    assert len(quantized) >= 4  # the MLPs and modulations are Q8_0, not stored as floats
    for name, weight in transformer.named_parameters():
        assert torch.equal(dequantize(weight).float(), expected[name]), name


def test_a_gguf_named_as_bfl_names_klein_runs_without_guidance(sets):
    from sdtui.worker.models import load_model

    info = load_model(str(sets["gguf"])).info()
    assert (info["family"], info["format"], info["guidance"]) == ("flux2-klein", "gguf", "none")
    assert (info["default_steps"], info["default_cfg"]) == (4, None)


@pytest.mark.parametrize(("missing", "names"), [
    ("qwen_3_4b.safetensors", "has no Qwen3 text encoder"),
    ("flux2-vae.safetensors", "has no VAE"),
    ("flux-2-klein-base-4b.config/tokenizer", "has no tokenizer for its text encoder"),
])
def test_a_set_with_a_part_missing_is_refused_naming_it(sets, tmp_path, missing, names):
    folder = shutil.copytree(sets["base"].parent, tmp_path / "klein")
    gone = folder / missing
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    for model in (folder, folder / BASE):
        with pytest.raises(BadInput) as caught:
            detect_format(model)
        message = f"{caught.value} ({caught.value.fix})"
        assert names in message and "\n" not in message, message
        assert "Hugging Face:" in message or "black-forest-labs/FLUX.2-klein-4B" in message
        assert caught.value.exit_code == EXIT_BAD_INPUT


def test_the_command_line_refuses_an_incomplete_set_before_creating_anything(sets, tmp_path):
    folder = shutil.copytree(sets["base"].parent, tmp_path / "klein")
    (folder / "qwen_3_4b.safetensors").unlink()
    stderr = refused_before_anything(tmp_path, folder / BASE)
    assert "has no Qwen3 text encoder" in stderr and "qwen_3_4b" in stderr
