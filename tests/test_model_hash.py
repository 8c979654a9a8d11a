"""The model's sha256 travels from the deployment's models step to the worker, which records it
in every image; a model file that changed under the same name gets a new worker."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from docker.types import Mount

from sdtui.deploy import worker_container
from sdtui.deploy.model_copy import describe
from sdtui.modelfiles import deployment_files, sha256_file
from tests.helpers_models import write_fake_safetensors


def spec(sha: str | None) -> worker_container.WorkerSpec:
    return worker_container.WorkerSpec("d", "img:1", "/data/m.safetensors",
                                       Mount("/data", "v", type="volume"), model_sha256=sha)


def test_the_single_file_models_sha256_is_what_the_copy_step_hashed(tmp_path: Path):
    model = write_fake_safetensors(tmp_path / "m.safetensors")
    files = describe(deployment_files([model]))  # what Option B's models step computes
    digests = {f.name: f.sha256 for f in files}
    assert worker_container.model_sha256([model], digests) == sha256_file(model)


def test_a_diffusers_folder_has_no_model_hash(tmp_path: Path):
    folder = tmp_path / "tiny-sd"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert worker_container.model_sha256([folder], {"tiny-sd/model_index.json": "ab"}) is None


def test_a_worker_for_another_model_file_is_not_current():
    made = SimpleNamespace(labels=spec("aa" * 32).labels)
    assert worker_container.is_current(made, spec("aa" * 32))
    assert not worker_container.is_current(made, spec("bb" * 32))
    assert spec("aa" * 32).labels[worker_container.MODEL_SHA_LABEL] == "aa" * 32
