"""Option A (and the scale-out, which uploads the same list): a FLUX.1 split set reaches the
moto bucket whole, keyed as the worker's --model path finds it."""

from __future__ import annotations

import hashlib

import pytest

from sdtui.deploy.aws import upload
from tests.helpers_flux_files import bfl_autoencoder, bfl_flux, tiny_clip, tiny_t5, write_set

PARTS = ("clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors", "ae.safetensors")


@pytest.mark.parametrize("named", ["folder", "transformer file"])
def test_a_set_is_uploaded_whole(aws, tmp_path, named):
    aws["s3"].create_bucket(Bucket="models")
    transformer = write_set(tmp_path / "flux1-dev", {
        "flux": bfl_flux(guidance=False), "clip": tiny_clip(), "t5": tiny_t5(),
        "ae": bfl_autoencoder()})
    model = transformer.parent if named == "folder" else transformer
    prefix = "flux1-dev/" if named == "folder" else ""

    result = upload.upload_models(aws["s3"], "models", [model])

    expected = {prefix + name for name in ("flux1-dev.safetensors", *PARTS,
                                           "flux1-dev.config/text_encoder/config.json")}
    assert set(result.uploaded) == expected
    for name in PARTS:
        head = aws["s3"].head_object(Bucket="models", Key=prefix + name)
        digest = hashlib.sha256((transformer.parent / name).read_bytes()).hexdigest()
        assert head["Metadata"]["sha256"] == digest
