"""Issue 6 features: loaders on random weights of the real architectures, face detection on
real photographs, upscaling sizes, img2img, variations, weighted prompts, metadata re-runs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from sdtui import errors, protocol
from sdtui.cli import build_parser
from sdtui.devtools.esrgan_weights import write_esrgan_weights
from sdtui.devtools.gfpgan_weights import write_gfpgan_weights
from sdtui.grid import make_grid, save_grid
from sdtui.headless import generation_params
from sdtui.worker.faces import detect_faces, restore_faces
from sdtui.worker.prompts import guide_blend, to_compel
from sdtui.worker.restorers import WeightsInvalid, load_restorer
from sdtui.worker.upscale import upscale
from sdtui.worker.variations import slerp


def png_b64(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A /data-like folder: Real-ESRGAN ×2/×4 (2 blocks for speed) and GFPGAN v1.3."""
    d = tmp_path_factory.mktemp("weights")
    write_esrgan_weights(d / "RealESRGAN_x2plus.pth", scale=2, blocks=2)
    write_esrgan_weights(d / "RealESRGAN_x4plus.pth", scale=4, blocks=2)
    write_gfpgan_weights(d / "GFPGANv1.3.pth")
    return d


# --- protocol ---------------------------------------------------------------------------------


def test_old_requests_stay_valid_with_the_features_off():
    req = protocol.request("generate", id="a", prompt="a fox")
    assert (req["init_image"], req["gfpgan"], req["upscale"], req["variation_amount"]) == (
        None, 0.0, None, 0.0)


@pytest.mark.parametrize("fields, expected", [
    ({"strength": 1.5}, "strength must be from 0 to 1"),
    ({"gfpgan": -0.1}, "gfpgan must be from 0 to 1"),
    ({"upscale": 3}, "upscale must be one of 2, 4"),
    ({"fit": "stretch"}, "fit must be one of resize, crop"),
    ({"variation_amount": 2}, "variation_amount must be from 0 to 1"),
    ({"init_image": base64.b64encode(b"GIF89a not a png").decode()}, "not a PNG or JPEG"),
    ({"init_image": "%%%"}, "base64-encoded PNG or JPEG"),
])
def test_invalid_feature_values_are_rejected_naming_the_field(fields, expected):
    with pytest.raises(protocol.ProtocolError, match=expected):
        protocol.request("generate", id="a", prompt="a fox", **fields)


def test_png_and_jpeg_init_images_are_accepted():
    image = Image.new("RGB", (8, 8), "red")
    for fmt in ("PNG", "JPEG"):
        protocol.request("generate", id="a", prompt="x", init_image=png_b64(image, fmt))


def test_headless_rejects_bad_values_before_anything_starts(tmp_path):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    args = build_parser().parse_args(["--no-ui", "--prompt", "x", "--init-image", str(not_image)])
    with pytest.raises(errors.BadInput, match="notes.txt is not a PNG or JPEG"):
        generation_params(args, "x")
    args = build_parser().parse_args(["--no-ui", "--prompt", "x", "--upscale", "3"])
    with pytest.raises(errors.BadInput, match="upscale must be one of 2, 4"):
        generation_params(args, "x")
    args = build_parser().parse_args(["--no-ui", "--prompt", "x", "--init-image", "missing.png"])
    with pytest.raises(errors.BadInput, match="cannot read init image"):
        generation_params(args, "x")


# --- loaders ----------------------------------------------------------------------------------


def test_loaders_read_random_weights_of_the_real_architectures(weights_dir):
    gfpgan = load_restorer(weights_dir / "GFPGANv1.3.pth", "GFPGAN")
    assert gfpgan.architecture.id == "GFPGAN" and gfpgan.size_requirements.minimum == 512
    for scale in (2, 4):
        model = load_restorer(weights_dir / f"RealESRGAN_x{scale}plus.pth", "ESRGAN")
        assert (model.architecture.id, model.scale) == ("ESRGAN", scale)


def test_a_state_dict_of_another_kind_is_a_clear_error(weights_dir, tmp_path):
    with pytest.raises(WeightsInvalid, match="is not GFPGANv1.3.pth weights"):
        load_restorer(weights_dir / "RealESRGAN_x4plus.pth", "GFPGAN")
    other = tmp_path / "other.pth"
    torch.save({"params_ema": torch.nn.Linear(3, 3).state_dict()}, other)
    with pytest.raises(WeightsInvalid, match="is not Real-ESRGAN weights"):
        load_restorer(other, "ESRGAN")


def test_missing_weights_name_the_expected_file(tmp_path):
    with pytest.raises(WeightsInvalid, match=r"expected .*GFPGANv1\.3\.pth"):
        load_restorer(tmp_path / "GFPGANv1.3.pth", "GFPGAN")


# --- faces and upscaling ----------------------------------------------------------------------


def test_face_detection_finds_the_astronauts_face_and_none_in_a_landscape():
    faces = detect_faces(Image.fromarray(skimage.data.astronaut()))
    assert len(faces) == 1
    x, y, w, h = faces[0]
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200  # her face, upper middle
    assert detect_faces(Image.fromarray(skimage.data.rocket())) == []


def test_face_restoration_changes_only_the_face_region_and_strength_zero_nothing(weights_dir):
    model = load_restorer(weights_dir / "GFPGANv1.3.pth", "GFPGAN")
    photo = Image.fromarray(skimage.data.astronaut())
    restored, faces = restore_faces(photo, model, 1.0)
    assert faces == 1 and restored.size == photo.size
    diff = np.abs(np.asarray(restored, int) - np.asarray(photo, int)).sum(axis=2)
    assert diff[100:160, 200:250].mean() > 10  # the face was replaced
    assert diff[450:, :100].max() == 0  # far from the face nothing moved
    unchanged, _ = restore_faces(photo, model, 0.0)
    assert np.abs(np.asarray(unchanged, int) - np.asarray(photo, int)).max() <= 1
    landscape = Image.fromarray(skimage.data.rocket())
    same, none = restore_faces(landscape, model, 1.0)
    assert none == 0 and np.array_equal(np.asarray(same), np.asarray(landscape))


@pytest.mark.parametrize("scale", [2, 4])
def test_upscaling_returns_exactly_the_scaled_size_tiled_like_untiled(weights_dir, scale):
    model = load_restorer(weights_dir / f"RealESRGAN_x{scale}plus.pth", "ESRGAN")
    image = Image.fromarray(skimage.data.astronaut()).resize((72, 56))
    tiled = upscale(image, model, 1.0, tile=32)
    assert tiled.size == (72 * scale, 56 * scale)
    whole = upscale(image, model, 1.0, tile=None)
    assert np.abs(np.asarray(tiled, int) - np.asarray(whole, int)).max() <= 2
    plain = upscale(image, model, 0.0)
    assert np.array_equal(np.asarray(plain), np.asarray(image.resize(plain.size, Image.LANCZOS)))


# --- prompts, variations, grid ----------------------------------------------------------------


def test_prompt_weighting_syntaxes_become_compel_syntax():
    assert guide_blend("a cat:0.3 a dog:0.7") == [("a cat", 0.3), ("a dog", 0.7)]
    assert to_compel("a cat:0.3 a dog:0.7") == '("a cat", "a dog").blend(0.3, 0.7)'
    assert to_compel("a (red:1.3) fox") == "a (red)1.3 fox"
    assert to_compel("a plain fox") == "a plain fox"
    assert guide_blend("time: 10:30 pm") is None


def test_slerp_ends_at_both_noises_and_keeps_the_norm():
    a, b = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
    assert torch.allclose(slerp(0.0, a, b), a) and torch.allclose(slerp(1.0, a, b), b, atol=1e-5)
    mid = slerp(0.5, a, b)
    assert abs(mid.norm() / a.norm() - 1) < 0.1


def test_grid_holds_every_image_of_the_batch(tmp_path):
    colours = ["red", "green", "blue"]
    paths = []
    for i, colour in enumerate(colours):
        paths.append(tmp_path / f"img-{i}.png")
        Image.new("RGB", (64, 64), colour).save(paths[-1])
    grid = make_grid([Image.open(p) for p in paths])
    assert grid.size == (128, 128)
    assert grid.getpixel((96, 32)) == (0, 128, 0) and grid.getpixel((32, 96)) == (0, 0, 255)
    out = save_grid(paths)
    assert out.parent == tmp_path and Image.open(out).size == (128, 128)
