"""Option A with a model named by reference, on the end-to-end harness (moto over HTTP, the sshd
"instance", s3fs, the real worker image on the instance's engine) plus the Hugging Face
stand-in: the instance fetches a gated repo's checkpoint straight into the bucket, the user's
machine fetches none of its bytes, the instance role may write `models/` only while the fetch
runs, and no token lands in the ledger, the instance's files or the container's configuration.
A LoRA named with `--lora-file` comes in the same fetch, into the `loras/` folder beside the model
in the bucket, where the worker applies it from.

The instance and the user's machine both reach the stand-in from 127.0.0.1: the stand-in tells
them apart by User-Agent (the runner sends sdtui.fetch.to_bucket.AGENT)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from local_cli import events, step_outcomes, wait_for
from PIL import Image

from sdtui.deploy.aws.iam import write_models_policy
from sdtui.deploy.aws.naming import FETCH_POLICY_NAME, POLICY_NAME, role_name
from sdtui.deploy.aws.remote_fetch import container_name
from sdtui.fetch.to_bucket import AGENT
from tests.fetch.conftest import checkpoint_files, hub  # noqa: F401 (a fixture)
from tests.fetch.standin import COMMIT, Hub

from .instance_sandbox import boot_instance, clean_up_instance

BUCKET = "sdtui-e2e-fetch"
NAME = "e2efetch"
REPO = "org/gated-tiny"
FILE = "tiny.safetensors"
LORA_REPO = "org/style"


def command(out: Path, *extra: str) -> list[str]:
    from conftest import OFFLINE_BASE

    return [sys.executable, "-m", "sdtui", "--no-ui", "--option", "aws", "--name", NAME,
            "--bucket", BUCKET, "--model", f"hf:{REPO}/{FILE}", "--base-image", OFFLINE_BASE,
            "--lora-file", f"hf:{LORA_REPO}", "--ssh-cidr", "203.0.113.7/32",
            "--prompt", "a lighthouse <lora:style:0.8>", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "7", "--out", str(out), "--json",
            *extra]


def policies(iam) -> dict[str, dict]:
    role = role_name(NAME)
    return {p: iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=role)["PolicyNames"]}


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.docker
@pytest.mark.slow
def test_option_a_fetches_a_gated_model_on_the_instance_into_the_bucket(
        worker_image, docker_client, aws, tmp_path, monkeypatch, ecr_registry,
        tiny_models, hub: Hub) -> None:  # noqa: F811
    model = tiny_models["safetensors"]
    size = model.stat().st_size
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    hub.add_repo(REPO, checkpoint_files(model, FILE), gated=True)
    from sdtui.devtools.tiny_lora import write_tiny_lora

    lora = write_tiny_lora(tiny_models["diffusers"], tmp_path / "style.safetensors")
    hub.add_repo(LORA_REPO, {"style.safetensors": lora}, tags=["lora"])
    monkeypatch.setenv("HF_TOKEN", hub.token)
    host, mount, boot = boot_instance(monkeypatch, tmp_path, aws["ec2"], ecr_registry, NAME)
    out = tmp_path / "out"
    iam = aws["iam"]
    try:
        # The first run: the stand-in holds the model's body at half way.
        hub.pause_at = size // 2
        proc = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            wait_for(hub.paused.is_set, unless=lambda: proc.poll() is not None, timeout=600)
            during = policies(iam)
            fetcher = docker_client.containers.get(container_name(NAME))
            config = json.dumps(fetcher.attrs)
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.communicate()[1][-3000:]) from None
        finally:
            hub.pause_at = None
            hub.resume.set()
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        assert boot.error is None

        # The role may write models/ only while the fetch runs.
        assert during == {POLICY_NAME: during[POLICY_NAME],
                          FETCH_POLICY_NAME: write_models_policy(BUCKET)}
        assert list(policies(iam)) == [POLICY_NAME]
        # The instance fetched every byte of the model, resuming after the cut at half way;
        # the user's machine fetched none.
        assert hub.served_as.get(AGENT, 0) >= size
        assert {a: n for a, n in hub.served_as.items() if a != AGENT and n} == {}
        ranged = [h.get("range") for k, p, h in hub.requests
                  if k == "cdn" and sha in p and h.get("user-agent") == AGENT]
        assert ranged[0] is None and ranged[1].startswith("bytes=")
        assert int(ranged[1].removeprefix("bytes=").rstrip("-")) >= size // 2 - 64 * 1024
        # Progress came back from the instance.
        progress = [e for e in events(stdout)
                    if e["event"] == "download_progress" and e["file"] == FILE]
        assert progress and progress[-1]["done"] == progress[-1]["total"] == size
        # It is in the bucket with its sha256, and the worker read it through the mount.
        key = f"models/hf/{REPO}/{COMMIT}/{FILE}"
        head = aws["s3"].head_object(Bucket=BUCKET, Key=key)
        assert head["Metadata"]["sha256"] == sha and head["ContentLength"] == size
        assert (mount / key).stat().st_size == size
        saved = sorted(out.glob("*.png"))
        assert len(saved) == 1
        params = Image.open(saved[0]).text["parameters"]
        assert f"Model hash: {sha[:10]}," in params
        # The LoRA came in the same fetch, beside the model, and the worker applied it.
        lora_key = f"models/hf/{REPO}/{COMMIT}/loras/style.safetensors"
        lora_sha = hashlib.sha256(lora.read_bytes()).hexdigest()
        assert aws["s3"].head_object(Bucket=BUCKET, Key=lora_key)["Metadata"]["sha256"] == \
            lora_sha
        assert re.search(r'Lora hashes: "?style: [0-9a-f]{12}', params), params
        assert hub.served_as.get(AGENT, 0) >= size + lora.stat().st_size
        assert f"hf:{REPO}/{FILE}@{COMMIT}" in json.dumps(Image.open(saved[0]).text)
        # No token in the ledger, on the instance's disk, or in the fetch container's config.
        state = Path(str(tmp_path / "state"))
        for path in files_under(state) + files_under(host):
            assert hub.token.encode() not in path.read_bytes(), path
        assert hub.token not in config
        assert not docker_client.containers.list(all=True, filters={"name": container_name(NAME)})

        # The second run fetches nothing: the bucket already holds that sha256.
        served = dict(hub.served_as)
        again = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        assert step_outcomes(events(again.stdout))["fetch"] == "skipped"
        assert hub.served_as == served
        assert list(policies(iam)) == [POLICY_NAME]
        assert len(list(out.glob("*.png"))) == 2

        down = subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--option", "aws",
                               "--name", NAME, "--teardown", "--purge-bucket"],
                              capture_output=True, text=True, timeout=600)
        assert down.returncode == 0, down.stderr
    finally:
        clean_up_instance(docker_client, boot, mount, ecr_registry, NAME)


def test_a_crash_left_fetch_policy_is_refused_and_dropped(aws) -> None:
    """The write policy a crashed fetch left on the role: the iam step's check refuses the role
    as it stands, and the step puts it back to read-only."""
    from sdtui.deploy.aws.iam import ensure_role, may_write_models, role_ready

    iam = aws["iam"]
    ensure_role(iam, NAME, BUCKET)
    assert role_ready(iam, NAME, BUCKET)
    with pytest.raises(RuntimeError), may_write_models(iam, NAME, BUCKET):
        assert sorted(policies(iam)) == sorted([POLICY_NAME, FETCH_POLICY_NAME])
        raise RuntimeError("the fetch failed")
    assert list(policies(iam)) == [POLICY_NAME]  # taken back even when the fetch failed
    # A crash (no finally ran) leaves it behind:
    iam.put_role_policy(RoleName=role_name(NAME), PolicyName=FETCH_POLICY_NAME,
                        PolicyDocument=json.dumps(write_models_policy(BUCKET)))
    assert not role_ready(iam, NAME, BUCKET)
    ensure_role(iam, NAME, BUCKET)
    assert list(policies(iam)) == [POLICY_NAME]
    assert role_ready(iam, NAME, BUCKET)



def test_an_extra_file_beside_a_model_to_fetch_is_refused_before_anything(
        hub: Hub, aws, model: Path) -> None:  # noqa: F811
    from .test_bad_input import nothing_created, refused

    hub.add_repo("org/m", {"m.safetensors": b"m" * 2000})
    err = refused("hf:org/m/m.safetensors", models=["hf:org/m/m.safetensors", model])
    assert "travels beside a model to fetch" in err.message
    assert nothing_created(aws)
    assert not hub.served  # resolved (the API), nothing downloaded
