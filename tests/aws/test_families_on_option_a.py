"""FLUX.1, SD 3.5 and FLUX.2 Klein generating on Option A, on the end-to-end harness
(test_end_to_end.py: moto over HTTP, the sshd "instance", the real bootstrap, s3fs mounting the
moto bucket, the Docker SDK over ssh://, the real worker reading through the mount). One
deployment, booted once; the real `sdtui --no-ui --option aws` command as a user types it,
switching the model each time, which replaces the worker ("the image or the model changed"):

1. FLUX.1 [dev] as ComfyUI keeps it, a Q8_0 GGUF transformer named as the file inside its folder
   (its siblings complete the set and travel beside it, at the bucket's top);
2. SD 3.5 as Stability's sd3.5_large.safetensors (MMDiT and VAE) with clip_l, clip_g and
   t5xxl_fp8_e4m3fn, named as the folder (it travels as `FOLDER/…`), with CFG and a negative
   prompt;
3. FLUX.2 [klein] as BFL's flux-2-klein-4b.safetensors with qwen_3_4b and flux2-vae, named as
   the folder.

Each image records its family and the transformer file's sha256 (hashed for the upload), and the
worker is given the set where it landed in the bucket, read-only at /data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdtui.deploy.aws.upload import SHA256_META
from sdtui.deploy.worker_container import LABEL, MODEL_LABEL, container_name
from sdtui.modelfiles import sha256_file
from sdtui.outputs import read_metadata
from tests.helpers_klein_files import write_klein_set
from tests.helpers_sd3_files import write_sd3_set
from tests.test_flux_formats import references
from tests.test_flux_formats import write_set as write_flux_set
from tests.test_sd3_files import stability_mmditx

from .instance_sandbox import assert_nothing_left, boot_instance, clean_up_instance

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAME = "s6-option-a-families"  # the deployment: its containers, roles, ECR repository
BUCKET = "s6-option-a-families-models"
FAST = ("--steps", "2", "--width", "64", "--height", "64", "--seed", "7", "--json")


@pytest.fixture(scope="module")
def transformers(tmp_path_factory, tiny_sd3, tiny_klein) -> dict[str, Path]:
    """Each family's set in the user's own folder, by its transformer file."""
    laptop = tmp_path_factory.mktemp("laptop")
    return {
        "flux1": write_flux_set(laptop / "flux1-dev", "dev", references("dev"),
                                transformer="gguf"),
        "sd3": write_sd3_set(laptop / "sd3.5_large", tiny_sd3["medium"], stability_mmditx(),
                             "safetensors", "fp8"),
        "flux2-klein": write_klein_set(tiny_klein["distilled"], laptop / "flux-2-klein-4b",
                                       "flux-2-klein-4b.safetensors"),
    }


def bucket_keys(model: Path) -> dict[str, Path]:
    """The README's layout: a set named by its folder lands as FOLDER/…, one named by its
    transformer file as the folder's files at the bucket's top (the folder holds the set)."""
    folder, prefix = (model, f"{model.name}/") if model.is_dir() else (model.parent, "")
    return {prefix + path.relative_to(folder).as_posix(): path
            for path in folder.rglob("*") if path.is_file()}


def sdtui(*args: str) -> subprocess.CompletedProcess:
    """The real command, in its own process (the environment carries the test settings)."""
    return subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--option", "aws",
                           "--name", NAME, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_each_family_generates_on_option_a(worker_image, docker_client, aws, tmp_path,
                                           monkeypatch, ecr_registry, transformers):
    from conftest import OFFLINE_BASE

    _, mount, boot = boot_instance(monkeypatch, tmp_path, aws["ec2"], ecr_registry, NAME)
    out = tmp_path / "out"
    deploy = ("--bucket", BUCKET, "--base-image", OFFLINE_BASE, "--ssh-cidr", "203.0.113.7/32",
              "--out", str(out))
    runs = [("flux1", "file", ("--prompt", "a red barn", "--guidance", "4.5")),
            ("sd3", "folder", ("--prompt", "a red barn", "--negative-prompt", "fog", "--cfg",
                               "4")),
            ("flux2-klein", "folder", ("--prompt", "a red barn"))]
    workers: list[str] = []
    try:
        for family, named, request in runs:
            transformer = transformers[family]
            model = transformer if named == "file" else transformer.parent
            run = sdtui(*deploy, "--model", str(model), *request, *FAST)
            assert boot.error is None
            assert run.returncode == 0, f"{family}: {run.stderr[-3000:]}"
            events = json_events(run.stdout)

            # The image: its family, and the transformer file's sha256 as the model hash.
            (saved,) = [Path(e["path"]) for e in events if e["event"] == "image"]
            meta = read_metadata(saved)
            params, infotext = meta["params"], meta["parameters"]
            sha = sha256_file(transformer)
            assert params["family"] == family, params
            assert params["model_sha256"] == sha
            assert f"Model hash: {sha[:10]}," in infotext, infotext

            # Every file of the set is in the bucket where the README says, with the sha256 of
            # the user's copy; the worker was given the transformer's or the folder's path
            # there, under /data: the s3fs mount, bound read-only.
            keys = bucket_keys(model)
            for key, path in keys.items():
                head = aws["s3"].head_object(Bucket=BUCKET, Key=key)
                assert head["Metadata"][SHA256_META] == sha256_file(path), key
            worker = docker_client.containers.get(container_name(NAME))
            assert worker.labels[MODEL_LABEL] == f"/data/{model.name}"
            data = next(m for m in worker.attrs["Mounts"] if m["Destination"] == "/data")
            assert (data["Source"], data["RW"]) == (str(mount), False)
            (seen_as,) = [key for key, path in keys.items() if path == transformer]
            assert (mount / seen_as).read_bytes() == transformer.read_bytes()
            workers.append(worker.id)
            if len(workers) > 1:  # another model: the worker replaced, not a second one
                assert any("the image or the model changed" in e.get("line", "")
                           for e in events if e["event"] == "step_log")
                assert workers[-1] != workers[-2]
                assert len(docker_client.containers.list(
                    all=True, filters={"label": f"{LABEL}={NAME}"})) == 1

            if family == "flux1":
                assert params["guidance"] == 4.5 and params["cfg"] == 1
                assert "CFG scale: 1, Distilled CFG Scale: 4.5," in infotext
            elif family == "sd3":
                assert (params["cfg"], params["negative_prompt"]) == (4, "fog")
                assert "Negative prompt: fog\nSteps: 2, Sampler: Euler" in infotext
                assert "CFG scale: 4," in infotext
            else:
                assert params["cfg"] == 1 and "Family: flux2-klein" in infotext
        assert len(list(out.glob("*.png"))) == len(runs)

        down = sdtui("--teardown", "--purge-bucket")
        assert down.returncode == 0, down.stderr
        assert_nothing_left(aws, docker_client, NAME, BUCKET)
    finally:
        clean_up_instance(docker_client, boot, mount, ecr_registry, NAME)

