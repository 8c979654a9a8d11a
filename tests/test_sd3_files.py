"""SD 3.5 from Stability's single files, against references we did not write:

- the MMDiT: a tiny `MMDiTX` of Stability's own reference implementation (Stability-AI/sd3.5,
  vendored in tests/vendor/sd35_stability), saved from its own state_dict as
  `sd3.5_medium.safetensors` holds it; sdtui's transformer computes the reference's forward;
- the whole file: that MMDiT under model.diffusion_model., beside the tiny diffusers folder's
  VAE in the LDM layout (written by diffusers' own converter script, vendored) and its CLIP-L,
  CLIP-G and T5 in transformers' layout under Stability's text_encoders. prefixes. The real
  worker draws the pixels of diffusers' StableDiffusion3Pipeline over the folder's components
  with that MMDiT.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.helpers_generation import SIZE, assert_same, images_of, reference_pipeline
from tests.test_worker import WorkerProcess

VENDOR = Path(__file__).parent / "vendor"
PROMPT = "a photo of a red lighthouse"
NEGATIVE = "a blue house at night"
# Stability's MMDiT is 64 × depth wide with `depth` heads of 64: two blocks, MMDiT-X's second
# attention in the first (SD 3.5 Medium's layout), RMS q/k norm; it reads the tiny folder's
# 64-wide text embeddings and pooled CLIP pair.
DEPTH = 2
ATOL = 1e-5
# That MMDiT in diffusers' terms, for the reference pipeline.
MMDITX_AS_DIFFUSERS = {
    "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": DEPTH,
    "attention_head_dim": 64, "num_attention_heads": DEPTH, "joint_attention_dim": 64,
    "caption_projection_dim": 64 * DEPTH, "pooled_projection_dim": 64,
    "pos_embed_max_size": 16, "dual_attention_layers": (0,), "qk_norm": "rms_norm",
}


def stability_mmditx(seed: int = 0) -> torch.nn.Module:
    if str(VENDOR / "sd35_stability") not in sys.path:
        sys.path.insert(0, str(VENDOR / "sd35_stability"))
    import mmditx

    torch.manual_seed(seed)
    model = mmditx.MMDiTX(
        input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None,
        pos_embed_max_size=16, patch_size=2, in_channels=16, depth=DEPTH, num_patches=16 * 16,
        adm_in_channels=64, qk_norm="rms", x_block_self_attn_layers=[0],
        context_embedder_config={"target": "torch.nn.Linear",
                                 "params": {"in_features": 64, "out_features": 64 * DEPTH}},
        dtype=torch.float32).eval()
    with torch.no_grad():
        for tensor in model.parameters():  # PyTorch's default init leaves the biases tiny
            tensor.normal_(0.0, 0.05)
    return model


def prefixed(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value.detach().clone().contiguous()
            for key, value in module.state_dict().items()}


def test_the_transformer_computes_what_stabilitys_mmditx_computes(tmp_path):
    from sdtui.worker.sd3_files import load_transformer

    reference = stability_mmditx()
    path = tmp_path / "sd3.5_medium.safetensors"
    save_file(prefixed(reference, "model.diffusion_model."), path)

    transformer = load_transformer(path, torch.float32)

    assert transformer.config.dual_attention_layers == (0,)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 8, 8, generator=generator)
    context = torch.randn(1, 7, 64, generator=generator)
    pooled = torch.randn(1, 64, generator=generator)
    timestep = torch.tensor([700.0])  # Stability's sigma × 1000, diffusers' timestep
    with torch.no_grad():
        expected = reference(x, timestep, y=pooled, context=context)
        got = transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=context,
                          pooled_projections=pooled).sample
    assert expected.abs().max() > 0.5  # a real signal, not zeros
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def _vae_to_ldm(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    spec = importlib.util.spec_from_file_location(
        "convert_sd", VENDOR / "diffusers_scripts" /
        "convert_diffusers_to_original_stable_diffusion.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.convert_vae_state_dict(vae.state_dict())


def write_stability_file(folder: Path, out: Path, mmditx: torch.nn.Module,
                         t5: bool = True) -> Path:
    """The tiny folder's components and Stability's MMDiT as one Stability single file, with
    the sidecar a toy's dims need (CLIP's heads; T5's tokenizer, which sdtui does not ship)."""
    import diffusers

    pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    state = prefixed(mmditx, "model.diffusion_model.")
    state |= {"first_stage_model." + k: v.contiguous() for k, v in _vae_to_ldm(pipe.vae).items()}
    encoders = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
    if t5:
        encoders["text_encoder_3"] = "t5xxl"
    for name, short in encoders.items():
        state |= prefixed(getattr(pipe, name), f"text_encoders.{short}.transformer.")
    state.pop("text_encoders.t5xxl.transformer.encoder.embed_tokens.weight", None)  # tied
    save_file(state, out)
    sidecar = out.with_name(out.stem + ".config")
    for name in ("text_encoder", "text_encoder_2"):
        (sidecar / name).mkdir(parents=True)
        config = json.loads((folder / name / "config.json").read_text())
        (sidecar / name / "config.json").write_text(json.dumps(config))
    if t5:
        shutil.copytree(folder / "tokenizer_3", sidecar / "tokenizer_3")
    return out


@pytest.fixture(scope="module")
def stability_file(tiny_sd3, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sd3-single")
    return write_stability_file(tiny_sd3["medium"], root / "sd3.5_medium.safetensors",
                                stability_mmditx())


def test_a_stability_single_file_draws_the_pixels_of_diffusers_sd3_pipeline(stability_file,
                                                                             tiny_sd3):
    import diffusers
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    worker = WorkerProcess(stability_file)
    try:
        ready = worker.client.wait_ready(timeout=300)
        (ours,) = images_of(list(worker.client.generate(
            prompt=PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE, steps=2, cfg=4.0,
            seed=3, preview_every=0)))
    finally:
        worker.stop()
    assert (ready["family"], ready["format"], ready["guidance"]) == ("sd3", "safetensors", "cfg")
    assert not ready["warnings"]

    transformer = diffusers.SD3Transformer2DModel(**MMDITX_AS_DIFFUSERS)
    state = prefixed(stability_mmditx(), "")
    transformer.load_state_dict(convert_sd3_transformer_checkpoint_to_diffusers(state))
    pipe = reference_pipeline(tiny_sd3["medium"], "StableDiffusion3Pipeline",
                          transformer=transformer)
    ref = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE,
               num_inference_steps=2, guidance_scale=4.0,
               generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert_same(ours, np.asarray(ref.convert("RGB"), dtype=int))


def test_a_file_without_t5_loads_and_says_so(tiny_sd3, tmp_path):
    from sdtui.worker.models import load_model

    path = write_stability_file(tiny_sd3["medium"], tmp_path / "sd3.5_large_turbo.safetensors",
                                stability_mmditx(), t5=False)
    model = load_model(str(path))
    assert model.pipe.text_encoder_3 is None and model.guidance == "none"
    (note,) = model.info()["warnings"]
    assert "has no T5-XXL text encoder" in note


def test_a_transformer_alone_is_refused_in_one_line(tmp_path):
    from sdtui.worker.checkpoint import ModelInvalid
    from sdtui.worker.models import load_model

    path = tmp_path / "sd3.5_medium_transformer.safetensors"
    save_file(prefixed(stability_mmditx(), "model.diffusion_model."), path)
    with pytest.raises(ModelInvalid) as refused:
        load_model(str(path))
    message = str(refused.value)
    # A transformer alone is a split set's: its parts are named (tests/test_sd3_sets.py).
    assert f"SD 3.5 model set {tmp_path} has no CLIP-L text encoder (clip_l*.safetensors) " \
           f"beside {path.name}" in message and "\n" not in message


# Stability's released MMDiTs as sd3_impls.BaseModel builds them from the files' shapes
# (sd3.5_large: 38 blocks, 192² positions; sd3.5_medium: 24 blocks, 384² positions and
# MMDiT-X's second attention in blocks 0-12), on the meta device: no memory, only shapes.
RELEASED = {"large": (38, 192, []), "medium": (24, 384, list(range(13)))}


@pytest.mark.parametrize("variant", RELEASED)
def test_the_config_read_from_a_released_files_shapes_builds_the_same_model(variant):
    import diffusers

    from sdtui.worker.sd3_files import transformer_config

    if str(VENDOR / "sd35_stability") not in sys.path:
        sys.path.insert(0, str(VENDOR / "sd35_stability"))
    import mmditx

    depth, positions, dual = RELEASED[variant]
    with torch.device("meta"):
        reference = mmditx.MMDiTX(
            input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None,
            pos_embed_max_size=positions, patch_size=2, in_channels=16, depth=depth,
            num_patches=positions * positions, adm_in_channels=2048, qk_norm="rms",
            x_block_self_attn_layers=dual,
            context_embedder_config={"target": "torch.nn.Linear",
                                     "params": {"in_features": 4096, "out_features": 64 * depth}})
        config = transformer_config({k: tuple(v.shape) for k, v in reference.state_dict().items()})
        derived = diffusers.SD3Transformer2DModel.from_config(config)
    assert (config["num_layers"], config["num_attention_heads"], config["pos_embed_max_size"],
            list(config["dual_attention_layers"])) == (depth, depth, positions, dual)
    assert (config["joint_attention_dim"], config["pooled_projection_dim"]) == (4096, 2048)
    assert sum(p.numel() for p in derived.parameters()) == sum(
        p.numel() for p in reference.parameters())
