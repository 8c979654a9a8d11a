"""FLUX.1 as ComfyUI users keep it: a folder with a transformer (BFL's layout or a GGUF),
clip_l.safetensors, a t5xxl_*.safetensors and ae.safetensors. `--model FOLDER` and `--model
TRANSFORMER_FILE` both name the set; each component computes what its reference does; a set
with a part missing is refused before anything is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.modelfiles import detect_format, model_files
from sdtui.worker.flux_parts import components_from_files
from tests.helpers_flux_files import (
    TINY_CLIP,
    bfl_autoencoder,
    bfl_flux,
    comfy_clip_l,
    comfy_t5,
    diffusers_forward,
    inputs,
    reference_forward,
    refused_before_anything,
    state_dict,
    stored_as,
    tiny_clip,
    tiny_t5,
    write_set,
)

PARTS = ("clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors", "ae.safetensors")


@pytest.fixture(scope="module")
def references() -> dict[str, torch.nn.Module]:
    return {"flux": bfl_flux(guidance=True), "clip": tiny_clip(), "t5": tiny_t5(),
            "ae": bfl_autoencoder()}


@pytest.mark.parametrize("named", ["folder", "transformer file"])
def test_a_split_set_loads_each_component_as_its_reference_computes(
        tmp_path: Path, references: dict[str, torch.nn.Module], named: str) -> None:
    transformer_file = write_set(tmp_path / "flux1-dev", references)
    model = transformer_file.parent if named == "folder" else transformer_file
    assert detect_format(model) == ("set" if named == "folder" else "safetensors")

    parts = components_from_files(model, torch.float32)

    assert sorted(parts) == ["text_encoder", "text_encoder_2", "transformer", "vae"]
    x = inputs()
    torch.testing.assert_close(diffusers_forward(parts["transformer"], x),
                               reference_forward(references["flux"], x), atol=1e-5, rtol=0)
    ids = torch.tensor([[998, 5, 17, 300, 999]])
    with torch.no_grad():
        expected = references["clip"](ids)
        got = parts["text_encoder"](ids)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output)
    # t5xxl_fp8_e4m3fn: the reference holds the same fp8-rounded weights, upcast.
    t5 = references["t5"]
    rounded = tiny_t5()
    rounded.load_state_dict({k: v.float() for k, v in comfy_t5(t5, torch.float8_e4m3fn).items()},
                            strict=False)
    # Its matrices stay fp8 in memory (upcast per block as it computes: test_fp8_storage.py).
    assert {p.dtype for p in parts["text_encoder_2"].parameters()} == {
        torch.float32, torch.float8_e4m3fn}
    with torch.no_grad():
        torch.testing.assert_close(parts["text_encoder_2"](torch.tensor([[4, 8, 15, 1]]))[0],
                                   rounded(torch.tensor([[4, 8, 15, 1]]))[0])
    # ae.safetensors in BFL's layout decodes (and encodes) as BFL's own autoencoder does.
    ae, vae = references["ae"], parts["vae"]
    assert vae.config.latent_channels == 16 and vae.config.shift_factor == 0.1159
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, ae.decoder(z), atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.encode(image).latent_dist.mean,
                                   ae.encoder(image)[:, :16], atol=1e-5, rtol=0)


def test_every_file_of_a_set_travels(tmp_path: Path,
                                     references: dict[str, torch.nn.Module]) -> None:
    transformer = write_set(tmp_path / "flux1-dev", references)
    by_folder = sorted(name for _, name in model_files(transformer.parent))
    assert by_folder == sorted(["flux1-dev/flux1-dev.safetensors", "flux1-dev/clip_l.safetensors",
                                "flux1-dev/t5xxl_fp8_e4m3fn.safetensors",
                                "flux1-dev/ae.safetensors",
                                "flux1-dev/flux1-dev.config/text_encoder/config.json"])
    by_file = [name for _, name in model_files(transformer)]
    assert by_file[0] == "flux1-dev.safetensors"  # the worker is pointed at the first
    assert sorted(by_file[1:]) == sorted([*PARTS, "flux1-dev.config/text_encoder/config.json"])


@pytest.mark.parametrize(("missing", "names"), [
    ("clip_l.safetensors", "clip_l.safetensors (Hugging Face: comfyanonymous/flux_text_encoders)"),
    ("t5xxl_fp8_e4m3fn.safetensors", "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors"),
    ("ae.safetensors", "ae.safetensors (Hugging Face: black-forest-labs/FLUX.1-schnell)"),
])
def test_a_set_with_a_part_missing_is_refused_naming_it(
        tmp_path: Path, references: dict[str, torch.nn.Module], missing: str,
        names: str) -> None:
    transformer = write_set(tmp_path / "flux1-dev", references)
    (transformer.parent / missing).unlink()
    for model in (transformer.parent, transformer):
        with pytest.raises(BadInput) as caught:
            detect_format(model)
        message = f"{caught.value} ({caught.value.fix})"
        assert names in message and "\n" not in message
        assert caught.value.exit_code == EXIT_BAD_INPUT


def test_the_command_line_refuses_an_incomplete_set_before_creating_anything(
        tmp_path: Path, references: dict[str, torch.nn.Module]) -> None:
    transformer = write_set(tmp_path / "flux1-dev", references)
    (transformer.parent / "ae.safetensors").unlink()
    stderr = refused_before_anything(tmp_path, transformer.parent)
    assert "has no VAE" in stderr and "black-forest-labs/FLUX.1-schnell" in stderr


@pytest.mark.docker
@pytest.mark.parametrize(("family", "named"), [("flux1", "folder"), ("flux1", "transformer file"),
                                               ("sd3", "transformer file")])
def test_a_set_copied_into_a_volume_arrives_whole(
        tmp_path: Path, references: dict[str, torch.nn.Module], docker_client, tiny_sd3,
        family: str, named: str) -> None:
    """Option B copies what model_files lists: every part lands in the volume, byte for byte,
    where the worker's --model path finds its siblings (an SD 3.5 set: its transformer GGUF,
    both CLIPs, T5 and sd3.5_vae.safetensors)."""
    import hashlib
    import uuid

    from docker.types import Mount

    from sdtui.deploy import model_copy
    from tests.conftest import OFFLINE_BASE
    from tests.helpers_sd3_files import write_sd3_set
    from tests.test_sd3_files import stability_mmditx

    if family == "sd3":
        transformer = write_sd3_set(tmp_path / "sd3.5_large", tiny_sd3["medium"],
                                    stability_mmditx(), "gguf", "fp16", vae="diffusers")
    else:
        transformer = write_set(tmp_path / "flux1-dev", references)
    model = transformer.parent if named == "folder" else transformer
    files = model_files(model)
    volume = f"sdtui-test-h17set-{uuid.uuid4().hex[:8]}"
    docker_client.volumes.create(volume)
    try:
        with model_copy.VolumeCopier(docker_client, volume, OFFLINE_BASE, {},
                                     name=f"{volume}-copy") as copier:
            copier.copy(model_copy.describe(files), {}, lambda n: None)
        listing = docker_client.containers.run(
            OFFLINE_BASE, ["sh", "-c", "cd /data && find . -type f ! -name '.sdtui-*' "
                                        "-exec sha256sum {} +"],
            mounts=[Mount("/data", volume, type="volume", read_only=True)], remove=True,
            name=f"sdtui-test-h17set-{uuid.uuid4().hex[:8]}").decode()
    finally:
        docker_client.volumes.get(volume).remove(force=True)
    arrived = {name.removeprefix("./"): digest
               for digest, name in (line.split() for line in listing.splitlines())}
    expected = {name: hashlib.sha256(source.read_bytes()).hexdigest() for source, name in files}
    assert arrived == expected
    worker_model = files[0][1].split("/")[0]  # what the worker's --model names
    prefix = transformer.parent.name + "/" if named == "folder" else ""
    assert worker_model == (transformer.parent.name if named == "folder" else transformer.name)
    parts = PARTS if family == "flux1" else (
        "clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors",
        "sd3.5_vae.safetensors", "sd3.5_large-Q8_0.config/tokenizer_3/tokenizer.json")
    assert {prefix + part for part in parts} <= arrived.keys()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn],
                         ids=["fp16", "bf16", "fp8_e4m3fn"])
def test_an_all_in_one_checkpoint_loads_all_four_components(
        tmp_path: Path, references: dict[str, torch.nn.Module], dtype: torch.dtype) -> None:
    parts = {
        "model.diffusion_model.": state_dict(references["flux"]),
        "text_encoders.clip_l.transformer.": comfy_clip_l(references["clip"]),
        "text_encoders.t5xxl.transformer.": comfy_t5(references["t5"], torch.float32),
        "vae.": state_dict(references["ae"]),
    }
    path = tmp_path / "flux1-dev-aio.safetensors"
    save_file({prefix + key: value for prefix, state in parts.items()
               for key, value in stored_as(state, dtype).items()}, path)
    sidecar = tmp_path / "flux1-dev-aio.config" / "text_encoder"
    sidecar.mkdir(parents=True)
    (sidecar / "config.json").write_text(json.dumps(TINY_CLIP))
    assert detect_format(path) == "safetensors"

    loaded = components_from_files(path, torch.float32)

    # The references hold the same stored weights, upcast.
    upcast = {prefix: {k: v.float() for k, v in stored_as(state, dtype).items()}
              for prefix, state in parts.items()}
    flux, clip, t5, ae = bfl_flux(guidance=True), tiny_clip(), tiny_t5(), bfl_autoencoder()
    flux.load_state_dict(upcast["model.diffusion_model."])
    clip.load_state_dict({k.removeprefix("text_model."): v for k, v in
                          upcast["text_encoders.clip_l.transformer."].items()})
    t5.load_state_dict(upcast["text_encoders.t5xxl.transformer."], strict=False)
    ae.load_state_dict(upcast["vae."])
    x = inputs()
    ids = torch.tensor([[998, 5, 17, 300, 999]])
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(diffusers_forward(loaded["transformer"], x),
                                   reference_forward(flux, x), atol=1e-5, rtol=0)
        torch.testing.assert_close(loaded["text_encoder"](ids).pooler_output,
                                   clip(ids).pooler_output)
        torch.testing.assert_close(loaded["text_encoder_2"](ids % 100)[0], t5(ids % 100)[0])
        torch.testing.assert_close(loaded["vae"].decode(z).sample, ae.decoder(z), atol=1e-5,
                                   rtol=0)


def test_an_all_in_one_checkpoint_without_its_vae_is_refused(
        tmp_path: Path, references: dict[str, torch.nn.Module]) -> None:
    from sdtui.worker.checkpoint import ModelInvalid

    path = tmp_path / "flux1-dev-aio.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in state_dict(references["flux"]).items()}
              | {"text_encoders.clip_l.transformer." + k: v
                 for k, v in comfy_clip_l(references["clip"]).items()}, path)
    with pytest.raises(ModelInvalid, match="no T5-XXL text encoder, VAE weights") as caught:
        components_from_files(path, torch.float32)
    assert "\n" not in str(caught.value)


def test_a_t5_gguf_completes_a_set(tmp_path: Path,
                                   references: dict[str, torch.nn.Module]) -> None:
    """city96's T5 GGUFs: transformers reads their feed-forward as ReLU unless told it is T5
    v1.1's gated GELU; sdtui's encoder computes what the reference does with the same weights."""
    from tests.helpers_flux_files import dequantized, gguf, write_t5_gguf

    transformer = write_set(tmp_path / "flux1-dev", references)
    (transformer.parent / "t5xxl_fp8_e4m3fn.safetensors").unlink()
    t5_file = transformer.parent / "t5-v1_1-xxl-encoder-Q8_0.gguf"
    mapping = write_t5_gguf(references["t5"], t5_file, gguf().GGMLQuantizationType.Q8_0)
    assert detect_format(transformer.parent) == "set"

    encoder = components_from_files(transformer.parent, torch.float32)["text_encoder_2"]

    stored = dequantized(t5_file)
    reference = tiny_t5()
    reference.load_state_dict({key: stored[name] for key, name in mapping.items()}, strict=False)
    ids = torch.tensor([[4, 8, 15, 16, 23, 42, 1]])
    with torch.no_grad():
        expected = reference(ids)[0]
        torch.testing.assert_close(encoder(ids)[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("part", "content", "says"), [
    ("ae.safetensors", b"<html>429 Too Many Requests</html>", "ae.safetensors is no safetensors"),
    ("t5-v1_1-xxl-encoder-Q8_0.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40, "is not a GGUF"),
])
def test_a_damaged_part_is_refused_before_anything_is_created(
        tmp_path: Path, references: dict[str, torch.nn.Module], part: str, content: bytes,
        says: str) -> None:
    transformer = write_set(tmp_path / "flux1-dev", references)
    if part.endswith(".gguf"):
        (transformer.parent / "t5xxl_fp8_e4m3fn.safetensors").unlink()
    (transformer.parent / part).write_bytes(content)
    with pytest.raises(BadInput, match=says) as caught:
        detect_format(transformer.parent)
    assert "download it again" in caught.value.fix and "\n" not in str(caught.value)


def test_a_language_model_gguf_in_place_of_t5_is_refused(
        tmp_path: Path, references: dict[str, torch.nn.Module]) -> None:
    from tests.helpers_flux_files import gguf

    g = gguf()
    transformer = write_set(tmp_path / "flux1-dev", references)
    (transformer.parent / "t5xxl_fp8_e4m3fn.safetensors").unlink()
    writer = g.GGUFWriter(path=None, arch="llama")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 32).numpy())
    writer.write_header_to_file(path=transformer.parent / "t5-llama.gguf")
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(BadInput, match="t5-llama.gguf is a GGUF of architecture 'llama'"):
        detect_format(transformer)
