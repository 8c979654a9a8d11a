"""Option A (and the scale-out, which uploads the same list): a FLUX.1 or SD 3.5 split set
reaches the moto bucket whole, keyed as the worker's --model path finds it."""

from __future__ import annotations

import hashlib

import pytest

from sdtui.deploy.aws import upload
from tests.helpers_sd3_files import both_sets

PARTS = {"flux1-dev": ("clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors", "ae.safetensors"),
         "sd3.5_large": ("clip_l.safetensors", "clip_g.safetensors",
                         "t5xxl_fp8_e4m3fn.safetensors", "sd3.5_vae.safetensors")}
SIDECARS = {"flux1-dev": ("flux1-dev.config/text_encoder/config.json",),
            "sd3.5_large": ("sd3.5_large-Q8_0.config/text_encoder/config.json",
                            "sd3.5_large-Q8_0.config/text_encoder_2/config.json")}


@pytest.fixture(scope="module")
def transformers(tmp_path_factory, tiny_sd3):
    return both_sets(tmp_path_factory.mktemp("sets"), tiny_sd3, sd3_t5="fp8")


@pytest.mark.parametrize("family", PARTS)
@pytest.mark.parametrize("named", ["folder", "transformer file"])
def test_a_set_is_uploaded_whole(aws, transformers, family, named):
    aws["s3"].create_bucket(Bucket="models")
    transformer = transformers[family]
    model = transformer.parent if named == "folder" else transformer
    prefix = f"{family}/" if named == "folder" else ""

    result = upload.upload_models(aws["s3"], "models", [model])

    expected = {prefix + name for name in (transformer.name, *PARTS[family], *SIDECARS[family])}
    assert expected <= set(result.uploaded)
    assert {name for name in result.uploaded if "tokenizer_3/" not in name} == expected
    for name in PARTS[family]:
        head = aws["s3"].head_object(Bucket="models", Key=prefix + name)
        digest = hashlib.sha256((transformer.parent / name).read_bytes()).hexdigest()
        assert head["Metadata"]["sha256"] == digest
