"""Model format detection and the file list a deploy copies: stdlib only, no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.modelfiles import detect_format, model_files, sidecars
from tests.helpers_models import write_fake_safetensors, write_fake_torch_zip

REPO = Path(__file__).resolve().parents[1]


def test_diffusers_folder_is_detected(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    assert detect_format(tmp_path) == "diffusers"


def test_zip_checkpoint_is_ckpt(tmp_path: Path) -> None:
    assert detect_format(write_fake_torch_zip(tmp_path / "sd-v1-4.ckpt")) == "ckpt"


def test_legacy_pickle_checkpoint_is_ckpt(tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    path.write_bytes(b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.")
    assert detect_format(path) == "ckpt"


def test_safetensors_with_header_is_detected(tmp_path: Path) -> None:
    assert detect_format(write_fake_safetensors(tmp_path / "m.safetensors")) == "safetensors"


def test_missing_path_says_check_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(BadInput) as caught:
        detect_format(missing)
    assert str(missing) in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert "check the path" in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("weights.bin", b"\x80\x02}q\x00."),
        ("random.safetensors", os.urandom(4096)),
        ("random.ckpt", os.urandom(4096)),
        ("empty.safetensors", b""),
        ("text.ckpt", b"version https://git-lfs.github.com/spec/v1\n"),
    ],
)
def test_bad_model_files_name_the_file_and_the_fix(tmp_path: Path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInput) as caught:
        detect_format(path)
    message = str(caught.value)
    assert str(path) in message
    assert "not a Stable Diffusion checkpoint" in message
    assert "pass the path of sd-v1-4.ckpt" in message
    assert "\n" not in message


def test_safetensors_header_longer_than_file_is_rejected(tmp_path: Path) -> None:
    path = write_fake_safetensors(tmp_path / "cut.safetensors", b'{"a": {"dtype": "F32"}}')
    path.write_bytes(path.read_bytes()[:-5])  # truncated inside the header
    with pytest.raises(BadInput, match="cut.safetensors"):
        detect_format(path)


def test_folder_without_model_index_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="model_index.json"):
        detect_format(tmp_path)


def test_checkpoint_alone_lists_only_itself(tmp_path: Path) -> None:
    ckpt = write_fake_torch_zip(tmp_path / "sd-v1-4.ckpt")
    assert model_files(ckpt) == [(ckpt, "sd-v1-4.ckpt")]
    assert sidecars(ckpt) == []


def test_checkpoint_brings_its_config_folder_and_yaml(tmp_path: Path) -> None:
    ckpt = write_fake_torch_zip(tmp_path / "my.ckpt")
    (tmp_path / "my.config" / "unet").mkdir(parents=True)
    (tmp_path / "my.config" / "unet" / "config.json").write_text("{}")
    (tmp_path / "my.yaml").write_text("model: {}\n")
    (tmp_path / "other.yaml").write_text("model: {}\n")  # another model's sidecar stays behind
    assert sidecars(ckpt) == [tmp_path / "my.config", tmp_path / "my.yaml"]
    assert model_files(ckpt) == [
        (ckpt, "my.ckpt"),
        (tmp_path / "my.config" / "unet" / "config.json", "my.config/unet/config.json"),
        (tmp_path / "my.yaml", "my.yaml"),
    ]


def test_diffusers_folder_lists_every_file_under_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    names = [name for _, name in model_files(folder)]
    assert names == ["tiny-sd/model_index.json", "tiny-sd/unet/diffusion_pytorch_model.safetensors"]
    assert all(source.is_absolute() for source, _ in model_files(folder))


def test_detecting_a_format_imports_no_torch(tmp_path: Path) -> None:
    ckpt = write_fake_torch_zip(tmp_path / "sd.ckpt")
    code = (
        "import sys\n"
        "from sdtui.modelfiles import detect_format, model_files\n"
        f"assert detect_format({str(ckpt)!r}) == 'ckpt'\n"
        f"model_files({str(ckpt)!r})\n"
        "heavy = [m for m in ('torch', 'diffusers', 'numpy', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
