"""Option A, Option B and the scale-out hand the worker the path of a FLUX.1 set inside the
volume or bucket as the worker finds it: the set's folder, or its transformer file with the
parts beside it (the upload itself: tests/aws/test_flux_files_upload.py and
tests/test_flux_files_sets.py)."""

from __future__ import annotations

import pytest

from sdtui.deploy.batch.models import plan
from sdtui.deploy.worker_container import model_in_container
from tests.helpers_flux_files import bfl_autoencoder, bfl_flux, tiny_clip, tiny_t5, write_set


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("flux") / "flux1-dev", {
        "flux": bfl_flux(guidance=True), "clip": tiny_clip(), "t5": tiny_t5(),
        "ae": bfl_autoencoder()})


@pytest.mark.parametrize(("named", "expected"), [("folder", "flux1-dev"),
                                                 ("transformer file", "flux1-dev.safetensors")])
def test_the_worker_is_given_the_set_where_it_lands(transformer, named, expected):
    model = transformer.parent if named == "folder" else transformer
    assert model_in_container([model]) == f"/data/{expected}"  # Option A's bind, B's volume
    files = plan(None, "models", False, [str(model)])  # the scale-out's shards
    assert files.primary == expected
    prefix = "flux1-dev/" if named == "folder" else ""
    assert {prefix + name for name in ("clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors",
                                       "ae.safetensors")} <= set(files.keys)
