"""Loading models offline in the worker, and the tiny test models in all three formats."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdtui.devtools import clip_vocab
from sdtui.modelfiles import model_files
from sdtui.worker.families import FAMILIES
from sdtui.worker.ldm import ConfigSources
from sdtui.worker.models import SD1_ASSETS, LoadedModel, ModelInvalid, load_model
from tests.helpers_models import TINY_LDM_YAML, block_network, open_clip_tokenizer

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("diffusers", "ckpt", "safetensors")
PROMPT = "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def tiny(tiny_models: dict[str, Path]) -> dict[str, Path]:
    return tiny_models


@pytest.fixture(scope="module")
def loaded(tiny: dict[str, Path]) -> dict[str, LoadedModel]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        block_network(patch)
        return {fmt: load_model(str(path)) for fmt, path in tiny.items()}


def generate(model: LoadedModel, seed: int = 1, size: int = 64) -> np.ndarray:
    result = model.pipe(
        PROMPT,
        height=size,
        width=size,
        num_inference_steps=5,
        generator=torch.Generator().manual_seed(seed),
        output_type="pil",
    )
    return np.asarray(result.images[0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_offline_and_generates(loaded, fmt: str) -> None:
    model = loaded[fmt]
    assert (model.format, model.device, model.dtype) == (fmt, "cpu", "float32")
    first = generate(model)
    assert first.shape == (64, 64, 3)
    assert first.std() > 0  # a picture, not a flat fill
    assert np.array_equal(first, generate(model))
    assert not np.array_equal(first, generate(model, seed=2))


def test_three_formats_of_the_same_weights_give_the_same_pixels(loaded) -> None:
    images = {fmt: generate(model) for fmt, model in loaded.items()}
    assert np.array_equal(images["diffusers"], images["ckpt"])
    assert np.array_equal(images["diffusers"], images["safetensors"])


def test_non_square_size_is_honoured(loaded) -> None:
    image = (
        loaded["ckpt"]
        .pipe(PROMPT, height=64, width=128, num_inference_steps=2, generator=torch.Generator())
        .images[0]
    )
    assert image.size == (128, 64)


def test_load_in_fresh_process_with_no_hub_and_no_network(tiny, tmp_path: Path) -> None:
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network blocked')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from sdtui.worker.models import load_model\n"
        f"m = load_model({str(tiny['safetensors'])!r})\n"
        "print(m.pipe('x', height=64, width=64, num_inference_steps=1).images[0].size)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(64, 64)")
    assert not (tmp_path / "hf" / "hub").exists()  # nothing fetched or cached


def test_model_files_carry_the_sidecar_config(tiny) -> None:
    names = [name for _, name in model_files(tiny["ckpt"])]
    assert names[0] == "tiny.ckpt"
    for needed in (
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer_config.json",
    ):
        assert f"tiny.config/{needed}" in names


def test_copied_with_model_files_it_still_loads(tiny, tmp_path: Path, monkeypatch) -> None:
    for source, name in model_files(tiny["ckpt"]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tmp_path / name)
    block_network(monkeypatch)
    assert load_model(str(tmp_path / "tiny.ckpt")).pipe.unet.config.block_out_channels == [
        32, 64, 96, 96]


def test_original_yaml_beside_checkpoint_configures_unet_and_vae(tiny, loaded, tmp_path) -> None:
    ckpt = shutil.copy(tiny["ckpt"], tmp_path / "yaml-model.ckpt")
    (tmp_path / "yaml-model.yaml").write_text(TINY_LDM_YAML)
    # The LDM yaml does not describe the text encoder; the toy one's config comes from S.config.
    shutil.copytree(
        tiny["ckpt"].with_name("tiny.config") / "text_encoder",
        tmp_path / "yaml-model.config" / "text_encoder",
    )
    sources = ConfigSources.beside(Path(ckpt), FAMILIES["sd1"])
    assert sources.uses_yaml("unet") and not sources.uses_yaml("text_encoder")
    model = load_model(str(ckpt))
    assert np.array_equal(generate(model), generate(loaded["ckpt"]))


def test_truncated_ckpt_is_model_invalid_naming_the_file(tiny, tmp_path: Path) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(tiny["ckpt"].read_bytes()[: tiny["ckpt"].stat().st_size // 2])
    with pytest.raises(ModelInvalid, match=str(broken)):
        load_model(str(broken))


def test_truncated_safetensors_is_model_invalid(tiny, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny["safetensors"].read_bytes()[:-1000])
    with pytest.raises(ModelInvalid, match="broken.safetensors"):
        load_model(str(broken))


def test_random_bytes_safetensors_is_model_invalid(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(ModelInvalid, match="junk.safetensors"):
        load_model(str(junk))


def test_missing_model_is_model_invalid(tmp_path: Path) -> None:
    with pytest.raises(ModelInvalid, match="does not exist"):
        load_model(str(tmp_path / "sd-v1-4.ckpt"))


def test_safetensors_that_is_not_stable_diffusion_is_model_invalid(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = tmp_path / "classifier.safetensors"
    save_file({"fc.weight": torch.zeros(10, 10), "fc.bias": torch.zeros(10)}, other)
    with pytest.raises(ModelInvalid, match=r"classifier.safetensors is not a Stable Diffusion "
                       r"checkpoint: none of its 2 tensors"):
        load_model(str(other))


def test_checkpoint_missing_weights_is_model_invalid(tiny, tmp_path: Path) -> None:
    state = torch.load(tiny["ckpt"], weights_only=True)["state_dict"]
    del state[next(k for k in state if k.startswith("first_stage_model.decoder."))]
    partial = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state}, partial)
    shutil.copytree(tiny["ckpt"].with_name("tiny.config"), tmp_path / "tiny.config")
    with pytest.raises(ModelInvalid, match=r"\(SD 1.x\): its vae weights do not fit .*\(1 missing"):
        load_model(str(partial))


def test_toy_checkpoint_without_its_config_points_at_the_sidecar(tiny, tmp_path: Path) -> None:
    alone = Path(shutil.copy(tiny["safetensors"], tmp_path / "alone.safetensors"))
    with pytest.raises(ModelInvalid, match=r"needs alone\.config/ beside it"):
        load_model(str(alone))


# --- the shipped SD 1.x configs and tokenizer


def test_shipped_configs_describe_stable_diffusion_1() -> None:
    """Build SD 1.x from the shipped configs on the meta device; parameter counts are v1.4's."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(SD1_ASSETS / "unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD1_ASSETS / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD1_ASSETS / "text_encoder"))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]


def test_shipped_tokenizer_has_clips_vocabulary() -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(SD1_ASSETS / "tokenizer")
    assert len(tokenizer) == 49408
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    ids = tokenizer("a photo of an astronaut riding a horse on mars").input_ids
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407]


def test_committed_tokenizer_files_are_what_clip_vocab_derives(tmp_path: Path) -> None:
    clip_vocab.write(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / name).read_bytes() == (SD1_ASSETS / "tokenizer" / name).read_bytes()
    assert len(json.loads((tmp_path / "vocab.json").read_text())) == 49408


def test_derived_tokenizer_matches_open_clip_simple_tokenizer() -> None:
    from transformers import CLIPTokenizer

    reference = open_clip_tokenizer()
    ours = CLIPTokenizer.from_pretrained(SD1_ASSETS / "tokenizer")
    for prompt in (
        "a photo of an astronaut riding a horse on mars",
        "Portrait of a cyberpunk samurai, 8k, trending on ArtStation!!",
        "café crème brûlée, (masterpiece:1.2), [[ugly]] 東京 🌸",
        "a  red   cube\non a blue sphere",
    ):
        assert ours(prompt, add_special_tokens=False).input_ids == reference.encode(prompt)


def test_bpe_source_is_the_open_clip_table() -> None:
    lines = gzip.decompress(clip_vocab.open_clip_bpe_path().read_bytes()).decode().split("\n")
    assert len(lines) > clip_vocab.MERGE_COUNT


def test_sd_v1_4_key_layout_fits_the_shipped_configs(tmp_path: Path) -> None:
    """A checkpoint laid out like sd-v1-4.ckpt (original LDM keys, SD 1.x shapes, on the meta
    device so it costs no memory) loads with the shipped configs and no sidecar."""
    from sdtui.devtools.random_checkpoint import full_size_layout

    state = full_size_layout("sd1")
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in state
    assert state["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in state
