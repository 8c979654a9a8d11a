"""Each image records where its fetched model came from, pinned (the repo's commit, or the
Civitai version with the file's sha256), and `--from-png` re-runs it with exactly that model even
after the repo's `main` has moved on: end to end on Option B, the stand-in behind the real
huggingface_hub client, the real worker in a real container."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from local_cli import FAST, events, one_line, throwaway_cli
from PIL import Image

from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.fetch.plan import fetched_source
from sdtui.fetch.resolve import resolve
from sdtui.metadata.reader import read_metadata
from sdtui.outputs import save_image
from tests.fetch.conftest import checkpoint_files, clean_env
from tests.fetch.standin import COMMIT, Hub

NEWER = "fedcba9876543210fedcba9876543210fedcba98"


def test_a_civitai_version_is_pinned_by_its_id(hub: Hub) -> None:
    hub.add_version(5, "Checkpoint", [{"name": "c.safetensors", "type": "Model",
                                       "data": b"c" * 4000, "primary": True}])
    resolved = resolve("https://civitai.com/models/50?modelVersionId=5")
    assert resolved.pinned == "civitai:5"
    assert resolved.record()["files"] == {"c.safetensors": hashlib.sha256(b"c" * 4000)
                                          .hexdigest()}


def test_a_catalogue_name_is_pinned_to_the_commit_it_resolved(hub: Hub) -> None:
    hub.add_repo("stable-diffusion-v1-5/stable-diffusion-v1-5",
                 {"v1-5-pruned-emaonly.safetensors": b"m" * 4000})
    resolved = resolve("sd15")
    assert resolved.pinned == ("hf:stable-diffusion-v1-5/stable-diffusion-v1-5/"
                               f"v1-5-pruned-emaonly.safetensors@{COMMIT}")
    assert resolve(resolved.pinned).record()["files"] == resolved.record()["files"]


def _png(folder: Path, source: object) -> Path:
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "PNG")
    return save_image(folder, image.getvalue(), {
        "prompt": "a cat", "seed": 1, "steps": 4, "cfg": 7.0, "width": 64, "height": 64,
        "scheduler": "euler_a", "model_source": source})


def _sdtui(hub: Hub, root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**clean_env(hub, root), "SDTUI_STATE_DIR": str(root / "state"),
           "SDTUI_CONFIG_DIR": str(root / "config"), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # never reached: refused before
    return subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--name", "t-src", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_option_a_re_runs_a_png_with_its_recorded_model(hub: Hub, tmp_path: Path,
                                                        tiny_models: dict[str, Path]) -> None:
    """Option A fetches by name now: --from-png resolves the image's pinned source (before
    AWS is reached, which this test never lets happen), and this machine downloads nothing."""
    hub.add_repo("org/tiny", checkpoint_files(tiny_models["safetensors"], "tiny.safetensors"))
    source = f"hf:org/tiny/tiny.safetensors@{COMMIT}"
    png = _png(tmp_path / "out", source)
    done = _sdtui(hub, tmp_path, "--option", "aws", "--bucket", "sdtui-src-test",
                  "--from-png", str(png))
    assert "cannot fetch" not in done.stderr
    assert any(p.startswith(f"/api/models/org/tiny/revision/{COMMIT}") for _, p, _ in
               hub.requests), hub.requests
    assert done.returncode == 3, done.stderr  # AWS unreachable: after resolving, nothing made
    assert not hub.served


@pytest.mark.parametrize("source", ["hf:org/tiny", "/home/someone/model.safetensors",
                                    "https://example.com/x.safetensors", 7])
def test_a_png_whose_source_is_not_pinned_is_refused_in_one_line(
        hub: Hub, tmp_path: Path, source: object) -> None:
    done = _sdtui(hub, tmp_path, "--from-png", str(_png(tmp_path / "out", source)))
    assert done.returncode == 2, done.stderr
    assert "is not a pinned hf:ORG/REPO[/FILE]@COMMIT or civitai:ID" in one_line(done.stderr)
    assert not (tmp_path / "state").exists() and not hub.requests


def _params(image: dict) -> dict:
    return read_metadata(Path(image["path"]))["params"]


@pytest.mark.docker
@pytest.mark.slow
def test_from_png_re_runs_the_same_commit_after_main_moved_on(
        hub: Hub, tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
        worker_image: str, tiny_models: dict[str, Path]) -> None:
    model = tiny_models["safetensors"]
    hub.add_repo("org/tiny", checkpoint_files(model, "tiny.safetensors"))
    root = tmp_path_factory.mktemp("fetch-source")
    with throwaway_cli(root, docker_client) as cli:
        cli.env.update(clean_env(hub, root))
        first = cli.run("--model", "hf:org/tiny", "--prompt", "a lighthouse", "--seed", "5",
                        *FAST, "--json")
        assert first.returncode == 0, first.stderr
        made = [e for e in events(first.stdout) if e["event"] == "image"]
        params = _params(made[0])
        assert params["model_source"] == f"hf:org/tiny/tiny.safetensors@{COMMIT}"
        assert params["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

        # The repo moves on: `main` now holds other weights under the same name.
        other = write_tiny_model(root / "other" / "tiny.safetensors", "safetensors", seed=8)
        hub.push("org/tiny", checkpoint_files(other, "tiny.safetensors"), NEWER)

        again = cli.run("--from-png", made[0]["path"], "--json")
        assert again.returncode == 0, again.stderr
        remade = [e for e in events(again.stdout) if e["event"] == "image"]
        assert _params(remade[0])["model_source"] == params["model_source"]
        assert _params(remade[0])["model_sha256"] == params["model_sha256"]
        assert hub.served_of(other.read_bytes()) == 0  # the newer weights were never fetched
        with Image.open(made[0]["path"]) as a, Image.open(remade[0]["path"]) as b:
            assert a.tobytes() == b.tobytes()  # the same image again


def test_the_model_a_deployment_fetched_is_told_from_its_ledger_params() -> None:
    """What the app's gallery compares an image's source with: the first model's pinned
    source, not a LoRA's, and none for a file."""
    pinned = f"hf:org/tiny/tiny.safetensors@{COMMIT}"
    lora = {"ref": "civitai:5", "pinned": "civitai:5"}
    assert fetched_source({"models": ["hf:org/tiny"],
                           "fetched": [{"ref": "hf:org/tiny", "pinned": pinned}, lora]}) == pinned
    assert fetched_source({"models": ["/m/tiny.safetensors"], "fetched": [lora]}) is None
    assert fetched_source({}) is None
