"""Helpers for tests that need models; tests/conftest.py re-exports the fixtures."""

from __future__ import annotations

import socket
import struct
import zipfile
from pathlib import Path

import pytest

from sdtui.devtools.tiny_flux import write_tiny_flux
from sdtui.devtools.tiny_klein import write_tiny_klein
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.devtools.tiny_sd3 import write_tiny_sd3

# The original LDM config (the kind of S.yaml other SD tools read) for the tiny model's UNet
# and VAE: sdtui.devtools.tiny_model's TINY["sd1"] / TINY_VAE in LDM terms.
TINY_LDM_YAML = """\
model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    image_size: 8
    channels: 4
    conditioning_key: crossattn
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 8
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [4, 2, 1]
        num_res_blocks: 2
        channel_mult: [1, 2, 3, 3]
        num_heads: 8
        use_spatial_transformer: true
        transformer_depth: 1
        context_dim: 32
        legacy: false
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 64
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [1, 2, 3, 3]
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""


def open_clip_tokenizer():
    """open_clip's own tokenizer (the reference for CLIP's BPE), loaded without the package
    __init__, which imports torchvision."""
    from importlib.util import module_from_spec, spec_from_file_location

    from sdtui.devtools import clip_vocab

    pytest.importorskip("ftfy", reason="open_clip's tokenizer needs ftfy (pip install ftfy)")
    source = clip_vocab.open_clip_bpe_path().with_name("tokenizer.py")
    spec = spec_from_file_location("open_clip_tokenizer", source)
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def block_network(monkeypatch) -> None:
    """Make every outgoing connection fail, as in a container with no network."""

    def refuse(self, *args, **kwargs):
        raise OSError(f"network blocked in this test (connect {args!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_fake_torch_zip(path: Path) -> Path:
    """A file with the structure torch.save writes (a zip holding archive/data.pkl)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/version", b"3\n")
    return path


def write_fake_safetensors(path: Path, header: bytes = b'{"__metadata__": {}}') -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three tiny formats from one seed: the same weights, so the same pixels."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "diffusers": write_tiny_model(root / "tiny-sd", "diffusers", seed=7),
        "ckpt": write_tiny_model(root / "tiny.ckpt", "ckpt", seed=7),
        "safetensors": write_tiny_model(root / "tiny.safetensors", "safetensors", seed=7),
    }


@pytest.fixture(scope="session")
def tiny_diffusers(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["diffusers"]


@pytest.fixture(scope="session")
def family_models(tiny_models: dict[str, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every family in every format, each family's formats from one seed (the same weights).
    SD 1.x is `tiny_models`."""
    models = {"sd1": tiny_models}
    for family in ("sd2", "sdxl"):
        root = tmp_path_factory.mktemp(family)
        models[family] = {
            fmt: write_tiny_model(root / name, fmt, seed=7, family=family)
            for fmt, name in (("diffusers", f"tiny-{family}"), ("ckpt", f"{family}.ckpt"),
                              ("safetensors", f"{family}.safetensors"))
        }
    return models


@pytest.fixture(scope="session")
def loaded_families(family_models):
    """Every family in every format, loaded by the worker's loader."""
    from sdtui.worker.models import load_model

    return {family: {fmt: load_model(str(path)) for fmt, path in formats.items()}
            for family, formats in family_models.items()}


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny FLUX.1 diffusers folders, [schnell] and [dev], from one seed."""
    root = tmp_path_factory.mktemp("flux1")
    return {variant: write_tiny_flux(root / f"tiny-flux1-{variant}", variant, seed=7)
            for variant in ("schnell", "dev")}


@pytest.fixture(scope="session")
def tiny_klein(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny FLUX.2 Klein diffusers folders, [klein] (distilled) and base, from one seed."""
    root = tmp_path_factory.mktemp("klein")
    return {variant: write_tiny_klein(root / f"tiny-klein-{variant}", variant, seed=7)
            for variant in ("distilled", "base")}


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny SD 3.5 diffusers folders from one seed: Medium (MMDiT-X) with T5, and Large Turbo
    without it (named as Stability names it, which is how Turbo is told apart)."""
    root = tmp_path_factory.mktemp("sd3")
    return {"medium": write_tiny_sd3(root / "tiny-sd3.5-medium", "medium", seed=7),
            "turbo": write_tiny_sd3(root / "tiny-sd3.5-large-turbo", "large-turbo", seed=7,
                                    t5=False)}


@pytest.fixture
def one_thread():
    """CPU kernels pick their path by thread count and by the weights' memory alignment; one
    thread (a one-CPU container) is where a misaligned format shows: run there."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
