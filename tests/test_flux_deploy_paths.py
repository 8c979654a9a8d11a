"""Option A, Option B and the scale-out hand the worker the path of a FLUX.1 or SD 3.5 set inside
the volume or bucket as the worker finds it: the set's folder, or its transformer file with the
parts beside it; each records the transformer's sha256 as the model's (the upload itself:
tests/aws/test_flux_files_upload.py and tests/test_flux_files_sets.py; the scale-out generating:
tests/aws/batch/test_families.py)."""

from __future__ import annotations

import pytest

from sdtui.deploy.batch.models import plan
from sdtui.deploy.worker_container import model_in_container, model_sha256
from sdtui.worker.batch import model_digest
from tests.helpers_sd3_files import both_sets

PARTS = {"flux1-dev": ("clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors", "ae.safetensors"),
         "sd3.5_large": ("clip_l.safetensors", "clip_g.safetensors", "sd3.5_vae.safetensors")}


@pytest.fixture(scope="module")
def transformers(tmp_path_factory, tiny_sd3):
    return both_sets(tmp_path_factory.mktemp("sets"), tiny_sd3)


@pytest.mark.parametrize("family", PARTS)
@pytest.mark.parametrize("named", ["folder", "transformer file"])
def test_the_worker_is_given_the_set_where_it_lands(transformers, family, named):
    transformer = transformers[family]
    model = transformer.parent if named == "folder" else transformer
    expected = family if named == "folder" else transformer.name
    assert model_in_container([model]) == f"/data/{expected}"  # Option A's bind, B's volume
    files = plan(None, "models", False, [str(model)])  # the scale-out's shards
    assert files.primary == expected
    prefix = f"{family}/" if named == "folder" else ""
    assert {prefix + name for name in PARTS[family]} <= set(files.keys)


@pytest.mark.parametrize("family", PARTS)
@pytest.mark.parametrize("named", ["folder", "transformer file"])
def test_the_shard_records_the_transformers_sha256_as_option_b_does(transformers, family, named):
    transformer = transformers[family]
    model = transformer.parent if named == "folder" else transformer
    files = plan(None, "models", False, [str(model)])
    digests = {key: f"sha256 of {key}" for key in files.keys}  # what the shard's copy computed
    # the shard's scratch holds the keys as they lie beside the model here
    shard = model_digest(files.primary, digests, model.parent)
    prefix = f"{family}/" if named == "folder" else ""
    assert shard == f"sha256 of {prefix}{transformer.name}"
    assert shard == model_sha256([model], digests)  # Option A's and Option B's worker
