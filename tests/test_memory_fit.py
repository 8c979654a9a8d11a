"""Whether a model set fits the GPU, decided from its files' headers before anything loads,
checked on the released models' full-size layouts: FLUX.1 [dev] (BFL's reference at its
released parameters), SD 3.5 Large (Stability's MMDiTX), FLUX.2 Klein 4B (diffusers' and
transformers' own classes at the released configs), CLIP-L/G and T5-XXL, all built on the
meta device and written as header-only files whose data is a hole (sparse: no disk, no
memory). The GPUs are what torch reports of a g4dn's T4, a g6's L4 and a g5's A10G.

The refusal goes through the real worker with torch.cuda faked as a T4 (only the GPU is
fake: torch's own get_device_capability reads the faked properties); the offload is diffusers'
own enable_model_cpu_offload, whose hooks are seen installed without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdtui.errors import EXIT_BAD_INPUT
from sdtui.worker import memory_fit
from sdtui.worker.families import flux1, flux2_klein, sd3
from sdtui.worker.families.base import EMBEDDED, NO_GUIDANCE
from sdtui.worker.memory_fit import DENOISER, MODEL, TEXT_ENCODER, VAE, DoesNotFit, Request
from sdtui.worker.models import family_dtype
from tests.helpers_flux_files import bfl, flux_params, gguf

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO / "tests" / "vendor"
# name, total_memory, compute capability (as torch.cuda.get_device_properties reports them)
T4 = ("Tesla T4", 15_828_320_256, (7, 5))
L4 = ("NVIDIA L4", 23_580_639_232, (8, 9))
A10G = ("NVIDIA A10G", 23_836_098_560, (8, 6))
GPUS = {"T4": T4, "L4": L4, "A10G": A10G}
Q = gguf().GGMLQuantizationType
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float8_e4m3fn: "F8_E4M3"}


# --- header-only files ---------------------------------------------------------------------------

def shapes_of(module: torch.nn.Module, prefix: str = "",
              skip: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items() if k not in skip}


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> Path:
    """A .safetensors file with these tensors' header and a hole for their data."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
    os.truncate(path, 8 + len(raw) + offset)
    return path


# llama-quantize's fallback for rows that are not a multiple of a K-quant's 256-weight block
# (ggml-org/llama.cpp src/llama-quant.cpp): SD 3.5 Large's rows are 2432 wide.
K_FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}


def write_gguf(path: Path, shapes: dict[str, tuple[int, ...]], arch: str, qtype) -> Path:
    """A .gguf with these tensors' infos, laid out as tests/helpers_flux_files.write_gguf (and
    city96's convert.py, then llama-quantize) lays them out: 1-D tensors stay F32, rows a
    K-quant block cannot cut take llama-quantize's fallback; a hole for the data."""
    g = gguf()
    writer = g.GGUFWriter(path, arch)
    writer.add_quantization_version(g.GGML_QUANT_VERSION)
    total = 0
    for name, shape in shapes.items():
        count = int(np.prod(shape, dtype=np.int64))
        kind = qtype
        if shape[-1] % g.GGML_QUANT_SIZES[kind][0]:
            kind = K_FALLBACK.get(kind, Q.F32)
        if len(shape) == 1 or shape[-1] % g.GGML_QUANT_SIZES[kind][0]:
            kind = Q.F32
        block, block_bytes = g.GGML_QUANT_SIZES[kind]
        nbytes = count // block * block_bytes
        # GGUF lists dimensions innermost first; the writer reverses numpy's order.
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)
        total += -(-nbytes // 32) * 32
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    os.truncate(path, -(-path.stat().st_size // 32) * 32 + total)
    return path


# --- the released models' layouts --------------------------------------------------------------

def _flux_dev() -> dict[str, tuple[int, ...]]:
    # black-forest-labs/flux src/flux/util.py: configs["flux-dev"].params
    params = flux_params(True, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                         num_heads=24, depth=19, depth_single_blocks=38)
    with torch.device("meta"):
        return shapes_of(bfl().Flux(params))


def _clip(hidden: int, layers: int, heads: int, ff: int, projection: int) -> dict:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    with torch.device("meta"):
        model = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=ff, projection_dim=projection, vocab_size=49408))
    return shapes_of(model, skip=("text_model.embeddings.position_ids",))


def _t5_xxl() -> dict[str, tuple[int, ...]]:
    from transformers import T5Config, T5EncoderModel

    # google/t5-v1_1-xxl's config.json; t5xxl_*.safetensors have no encoder.embed_tokens copy.
    with torch.device("meta"):
        model = T5EncoderModel(T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64,
                                        num_layers=24, vocab_size=32128,
                                        feed_forward_proj="gated-gelu"))
    return shapes_of(model, skip=("encoder.embed_tokens.weight",))


def _vae16() -> dict[str, tuple[int, ...]]:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        model = AutoencoderKL(latent_channels=16, block_out_channels=(128, 256, 512, 512),
                              down_block_types=("DownEncoderBlock2D",) * 4,
                              up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)
    return shapes_of(model)


def _sd35_large() -> dict[str, tuple[int, ...]]:
    if str(VENDOR / "sd35_stability") not in sys.path:
        sys.path.insert(0, str(VENDOR / "sd35_stability"))
    import mmditx

    # Stability's sd3.5_large as sd3_impls builds it from the file (38 blocks, 192² positions).
    with torch.device("meta"):
        model = mmditx.MMDiTX(
            input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None,
            pos_embed_max_size=192, patch_size=2, in_channels=16, depth=38,
            num_patches=192 * 192, adm_in_channels=2048, qk_norm="rms",
            x_block_self_attn_layers=[],
            context_embedder_config={"target": "torch.nn.Linear",
                                     "params": {"in_features": 4096, "out_features": 64 * 38}})
    return shapes_of(model)


def _flux_set(folder: Path, transformer: str, qtype=None) -> Path:
    folder.mkdir()
    if qtype is None:
        write_safetensors(folder / transformer, _flux_dev(), torch.bfloat16)
    else:
        write_gguf(folder / transformer, _flux_dev(), "flux", qtype)
    write_safetensors(folder / "clip_l.safetensors", _clip(768, 12, 12, 3072, 768),
                      torch.float16)
    write_safetensors(folder / "t5xxl_fp8_e4m3fn.safetensors", _t5_xxl(), torch.float8_e4m3fn)
    write_safetensors(folder / "ae.safetensors", _vae16(), torch.float32)
    return folder


def _klein_4b(folder: Path) -> Path:
    """FLUX.2 [klein] 4B's diffusers folder (black-forest-labs/FLUX.2-klein-4B's configs)."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel(
            num_layers=5, num_single_layers=20, attention_head_dim=128, num_attention_heads=24,
            joint_attention_dim=7680, in_channels=128, guidance_embeds=False)
        qwen = Qwen3ForCausalLM(Qwen3Config(
            hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
            tie_word_embeddings=True))
        vae = AutoencoderKLFlux2()
    folder.mkdir()
    for name, module, file, skip in (
            ("transformer", transformer, "diffusion_pytorch_model.safetensors", ()),
            ("text_encoder", qwen, "model-00001-of-00001.safetensors", ("lm_head.weight",)),
            ("vae", vae, "diffusion_pytorch_model.safetensors", ())):
        (folder / name).mkdir()
        write_safetensors(folder / name / file, shapes_of(module, skip=skip), torch.bfloat16)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "Flux2KleinPipeline", "is_distilled": True,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2TokenizerFast"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"]}))
    return folder


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("released")
    sd35 = root / "sd3.5-large"
    sd35.mkdir()
    large = _sd35_large()
    write_gguf(sd35 / "sd3.5_large-Q4_K_S.gguf", large, "sd3", Q.Q4_K)
    write_gguf(sd35 / "sd3.5_large-Q5_K_S.gguf", large, "sd3", Q.Q5_K)
    write_safetensors(sd35 / "clip_l.safetensors", _clip(768, 12, 12, 3072, 768), torch.float16)
    write_safetensors(sd35 / "clip_g.safetensors", _clip(1280, 32, 20, 5120, 1280),
                      torch.float16)
    write_safetensors(sd35 / "t5xxl_fp8_e4m3fn.safetensors", _t5_xxl(), torch.float8_e4m3fn)
    # Large at 16 bits, as the catalogue's sd35-large (the diffusers repo) holds it.
    write_safetensors(sd35 / "sd3.5_large.safetensors", large, torch.float16)
    write_safetensors(sd35 / "t5xxl_fp16.safetensors", _t5_xxl(), torch.float16)
    write_safetensors(sd35 / "vae.safetensors", _vae16(), torch.float16)
    return {"flux1-dev fp16": _flux_set(root / "flux1-dev-fp16", "flux1-dev.safetensors"),
            "flux1-dev Q4_K_S": _flux_set(root / "flux1-dev-q4", "flux1-dev-Q4_K_S.gguf",
                                          Q.Q4_K),
            "sd3.5-large": sd35, "klein-4b": _klein_4b(root / "FLUX.2-klein-4B")}


def request(family, guidance: str, gpu: tuple) -> Request:
    """What the worker checks a load against on this GPU (its dtype: models.family_dtype)."""
    dtype = family_dtype(family, "cuda", gpu[2])
    return Request.at_default_size(family, guidance, dtype.itemsize, dtype == torch.float16)


def sd35_parts(folder: Path, transformer: str, size: int,
               t5: str = "t5xxl_fp8_e4m3fn.safetensors") -> list[memory_fit.Part]:
    roles = {transformer: DENOISER, "clip_l.safetensors": TEXT_ENCODER,
             "clip_g.safetensors": TEXT_ENCODER, t5: TEXT_ENCODER, "vae.safetensors": VAE}
    return [memory_fit.file_part(folder / name, role, size) for name, role in roles.items()]


# --- the required fits ---------------------------------------------------------------------------

@pytest.mark.parametrize("gpu", GPUS)
def test_flux1_dev_q4_k_s_with_t5_fp8_fits(released, gpu: str) -> None:
    found = memory_fit.check(released["flux1-dev Q4_K_S"], "set",
                             request(flux1.FAMILY, EMBEDDED, GPUS[gpu]), *GPUS[gpu][:2])
    assert found is not None and found.peak <= found.budget
    parts = {p.name: p for p in found.parts}
    # The GGUF stays quantized (Q4_K: 4.5 bits a weight); fp8 T5 stays fp8 but for its
    # embedding (32128 x 4096), read at 16 bits.
    assert 6.2e9 < parts["flux1-dev-Q4_K_S.gguf"].bytes < 7.0e9
    assert parts["t5xxl_fp8_e4m3fn.safetensors"].bytes == 4_762_310_656 + 32128 * 4096
    if gpu == "T4":  # 15 GiB holds the transformer or T5, not both: T5 waits on the CPU
        assert found.offload == MODEL
        assert "t5xxl_fp8_e4m3fn.safetensors" in found.line()


@pytest.mark.parametrize("quant", ["Q4_K_S", "Q5_K_S"])
def test_sd35_large_gguf_with_t5_fp8_fits_a_t4_with_the_text_encoders_offloaded(
        released, quant: str) -> None:
    req = request(sd3.FAMILY, "cfg", T4)
    parts = sd35_parts(released["sd3.5-large"], f"sd3.5_large-{quant}.gguf", req.dtype_size)
    found = memory_fit.plan(parts, req, T4[1])
    assert found is not None and found.offload == MODEL
    assert {p.name for p in found.offloaded} == {
        "clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp8_e4m3fn.safetensors"}


@pytest.mark.parametrize("gpu", GPUS)
def test_sd35_large_at_16_bits_needs_a_24_gb_gpu_with_the_text_encoders_offloaded(
        released, gpu: str) -> None:
    """What the README, the app's help and the catalogue say of Large at 16 bits: a g5 or g6
    with its text encoders on the CPU while the transformer denoises; a T4 cannot hold it."""
    req = request(sd3.FAMILY, "cfg", GPUS[gpu])
    parts = sd35_parts(released["sd3.5-large"], "sd3.5_large.safetensors", req.dtype_size,
                       t5="t5xxl_fp16.safetensors")
    found = memory_fit.plan(parts, req, GPUS[gpu][1])
    if gpu == "T4":
        assert found is None
    else:
        assert found is not None and found.offload == MODEL


def test_flux2_klein_4b_fits_a_t4_with_its_qwen3_encoder_offloaded(released) -> None:
    found = memory_fit.check(released["klein-4b"], "diffusers",
                             request(flux2_klein.FAMILY, NO_GUIDANCE, T4), *T4[:2])
    parts = {p.name: p for p in found.parts}
    assert 7.7e9 < parts["transformer"].bytes < 7.8e9  # the 16-bit transformer ≈ 7.8 GB
    assert 8.0e9 < parts["text_encoder"].bytes < 8.1e9  # Qwen3-4B
    assert found.offload == MODEL and [p.name for p in found.offloaded] == ["text_encoder"]


@pytest.mark.parametrize("gpu", ["L4", "A10G"])
def test_flux2_klein_4b_sits_whole_on_a_24_gb_gpu(released, gpu: str) -> None:
    found = memory_fit.check(released["klein-4b"], "diffusers",
                             request(flux2_klein.FAMILY, NO_GUIDANCE, GPUS[gpu]), *GPUS[gpu][:2])
    assert found.offload == memory_fit.NONE


# --- what does not fit ---------------------------------------------------------------------------

@pytest.mark.parametrize("gpu", GPUS)
def test_flux1_dev_at_16_bits_is_refused_with_the_way_out(released, gpu: str) -> None:
    with pytest.raises(DoesNotFit) as refused:
        memory_fit.check(released["flux1-dev fp16"], "set",
                         request(flux1.FAMILY, EMBEDDED, GPUS[gpu]), *GPUS[gpu][:2])
    message = str(refused.value)
    assert "\n" not in message and GPUS[gpu][0] in message
    assert "needs 23.2 GiB to denoise 1024×1024 (22.2 GiB of weights)" in message
    # A 16-bit FLUX.1 transformer (22.2 GiB) leaves no room for its activations on a 24 GB
    # card (22 GiB as torch reports it): the way out is a GGUF, or a 48 GB L40S.
    assert message.endswith("use a Q8_0 or Q4_K_S GGUF transformer, or an instance with a "
                            "48 GB L40S (g6e.xlarge)")


# --- through the real worker ---------------------------------------------------------------------

FAKE_T4 = f"""
import runpy, sys, types
import torch

properties = types.SimpleNamespace(name={T4[0]!r}, total_memory={T4[1]}, major={T4[2][0]},
                                   minor={T4[2][1]}, multi_processor_count=40)
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_properties = lambda device=None: properties
sys.argv = ["sdtui.worker", *sys.argv[1:]]
runpy.run_module("sdtui.worker", run_name="__main__")
"""


def test_the_worker_refuses_a_set_that_cannot_fit_a_t4_in_one_line(released) -> None:
    done = subprocess.run([sys.executable, "-c", FAKE_T4, "--model",
                           str(released["flux1-dev fp16"])],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == EXIT_BAD_INPUT, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(events) == 1 and events[0]["code"] == "model_invalid"
    assert events[0]["family"] == "flux1"
    assert "does not fit this GPU (Tesla T4, 14.7 GiB)" in events[0]["message"]
    assert "use a Q8_0 or Q4_K_S GGUF transformer" in events[0]["message"]
    assert "Traceback" not in done.stderr


# --- the estimate is what the loader keeps, and the offload is diffusers' own ------------------

def test_the_estimate_is_what_the_loader_keeps(tmp_path: Path) -> None:
    """A tiny FLUX.1 set with a Q8_0 GGUF transformer and an fp8 T5, loaded by sdtui's loader:
    each component holds exactly the bytes the headers said."""
    from sdtui.worker.flux_parts import components_from_files
    from tests.helpers_flux_files import (
        bfl_autoencoder,
        bfl_flux,
        state_dict,
        tiny_clip,
        tiny_t5,
        write_set,
    )
    from tests.helpers_flux_files import write_gguf as write_flux_gguf

    flux = bfl_flux(guidance=True)
    transformer = write_set(tmp_path / "set", {"flux": flux, "clip": tiny_clip(),
                                               "t5": tiny_t5(), "ae": bfl_autoencoder()})
    transformer.unlink()
    write_flux_gguf(state_dict(flux), transformer.with_suffix(".gguf"), Q.Q8_0)

    estimate = {p.name: p.bytes for p in memory_fit.model_parts(tmp_path / "set", "set", 4)}
    loaded = components_from_files(tmp_path / "set", torch.float32)
    names = {"transformer": "flux1-dev.gguf", "text_encoder": "clip_l.safetensors",
             "text_encoder_2": "t5xxl_fp8_e4m3fn.safetensors", "vae": "ae.safetensors"}
    kept = {names[c]: sum(p.nbytes for p in m.parameters()) for c, m in loaded.items()}
    assert estimate == kept


@pytest.fixture(scope="module")
def loaded_schnell(tiny_flux):
    from sdtui.worker.models import load_model

    return load_model(str(tiny_flux["schnell"]))


def test_model_offload_installs_diffusers_hooks_without_a_gpu(loaded_schnell) -> None:
    pipe = loaded_schnell.pipe
    plan = memory_fit.Plan(MODEL, 0, 0, (), request(flux1.FAMILY, NO_GUIDANCE, T4))
    memory_fit.place(pipe, plan, "cuda")
    try:
        # diffusers' enable_model_cpu_offload: every component waits on the CPU behind a hook
        # that moves it to the GPU for its forward (the text encoders leave it before the
        # transformer comes in).
        assert pipe._offload_device == torch.device("cuda:0")
        for name in ("text_encoder", "text_encoder_2", "transformer", "vae"):
            component = getattr(pipe, name)
            assert component._hf_hook.execution_device == torch.device("cuda:0"), name
            assert component.device.type == "cpu"
    finally:
        pipe.remove_all_hooks()


def test_a_size_that_cannot_fit_the_placement_is_refused_before_sampling(released,
                                                                          loaded_schnell) -> None:
    import threading

    from sdtui import protocol
    from sdtui.errors import BadInput
    from sdtui.worker.sampling import Sampler

    found = memory_fit.check(released["flux1-dev Q4_K_S"], "set",
                             request(flux1.FAMILY, EMBEDDED, T4), *T4[:2])
    assert found.size_refusal(1024, 1024) is None
    assert found.size_refusal(1536, 1536) is None
    refusal = found.size_refusal(2048, 2048)
    assert refusal.startswith("2048×2048 needs an estimated 19.2 GiB on this GPU and 13.7 GiB "
                              "is free")
    # The worker's sampler asks the placement before it samples anything.
    sampler = Sampler(loaded_schnell)
    loaded_schnell.memory = memory_fit.Plan(memory_fit.NONE, 0, 1, (), found.request)
    events: list = []
    try:
        with pytest.raises(BadInput, match="64×64 needs an estimated"):
            sampler.run(protocol.request("generate", id="t", prompt="a lighthouse", width=64,
                                         height=64, steps=1),
                        lambda kind, fields: events.append(kind), threading.Event())
    finally:
        loaded_schnell.memory = None
    assert "image" not in events and "progress" not in events


def test_a_text_encoder_too_big_even_alone_is_named(released, tmp_path: Path) -> None:
    """The refusal names the phase that does not fit: here a (made-up) 16 GiB T5, too big for a
    T4 even with the transformer off the GPU."""
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("flux1-dev-Q4_K_S.gguf", "clip_l.safetensors", "ae.safetensors"):
        (folder / name).symlink_to(released["flux1-dev Q4_K_S"] / name)
    write_safetensors(folder / "t5xxl_fp16.safetensors", {"shared.weight": (4096, 2 * 1024**2)},
                      torch.float16)
    with pytest.raises(DoesNotFit, match=r"\): its text encoder t5xxl_fp16.safetensors alone "
                                         r"needs 16.0 GiB, and 13.7 GiB is free for it — "):
        memory_fit.check(folder, "set", request(flux1.FAMILY, EMBEDDED, T4), *T4[:2])
