"""`sdtui --no-ui --model NAME` as a user runs it: refusals before anything exists, the
catalogue listing, and, end to end on Option B, a catalogue name fetched from the stand-in
(a tiny model behind the real repo and file names): Ctrl-C mid-download, then the same command
resumes it and generates in the real worker container."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from local_cli import FAST, events, labelled, one_line, step_outcomes, throwaway_cli, wait_for

from sdtui.fetch.catalogue import CATALOGUE
from sdtui.fetch.download import CHUNK
from tests.fetch.conftest import checkpoint_files, clean_env
from tests.fetch.standin import COMMIT, Hub


def test_list_models_names_each_entry_with_its_licence() -> None:
    done = subprocess.run([sys.executable, "-m", "sdtui", "--list-models"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for e in CATALOGUE.values():
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(e.name + " "))
        assert str(e.source) in line and e.licence in line and "gated" in line


@pytest.mark.parametrize(("args", "says"), [
    (["--model", "sdx1"], "unknown model name 'sdx1'.*did you mean sdxl"),
    (["--model", "hf:org/lora"], "is a LoRA"),
    (["--model", "https://huggingface.co/org"], "not a repo"),
    (["--model", "sd15", "--lora-file", "civitai:5"], "not a LoRA"),
    (["--option", "aws", "--bucket", "sdtui-fetch-test", "--model", "/x.ckpt",
      "--lora-file", "civitai:5"], "--lora-file fetches into the loras/ folder beside a model "
                                   "named to fetch on Option A"),
    (["--option", "batch", "--bucket", "sdtui-fetch-test", "--model", "sd-v1-4.ckpt",
      "--lora-file", "civitai:5"], "--lora-file fetches into the loras/ folder beside a model "
                                   "named to fetch on the scale-out"),
])
def test_bad_names_exit_2_with_one_line_and_nothing_created(
        hub: Hub, tmp_path: Path, args: list[str], says: str) -> None:
    hub.add_repo("org/lora", {"lora.safetensors": b"l" * 2000}, tags=["lora"])
    hub.add_repo(CATALOGUE["sd15"].source.repo, {CATALOGUE["sd15"].source.path: b"m" * 2000})
    hub.add_version(5, "Checkpoint", [{"name": "c.safetensors", "type": "Model", "data": b"c"}])
    env = {**clean_env(hub, tmp_path), "SDTUI_STATE_DIR": str(tmp_path / "state"),
           "SDTUI_CONFIG_DIR": str(tmp_path / "config"), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # never reached: refused before
    done = subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--name", "t-fetch-bad",
                           *args, "--prompt", "x"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert re.search(says, one_line(done.stderr))
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*.json"))
    assert not (tmp_path / "models").exists()
    assert not hub.served


@pytest.mark.parametrize("model", ["hf:org/m", "civitai:5"])
def test_an_unreachable_hub_is_one_line_exit_3(tmp_path: Path, model: str) -> None:
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "CIVITAI_ENDPOINT":
           "http://127.0.0.1:9", "SDTUI_STATE_DIR": str(tmp_path / "state"),
           "SDTUI_CONFIG_DIR": str(tmp_path / "config"), "HF_HOME": str(tmp_path / "hf"),
           "SDTUI_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--name", "t-fetch-off",
                           "--model", model, "--prompt", "x"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "check the connection" in one_line(done.stderr)
    assert not (tmp_path / "models").exists()


@pytest.mark.docker
@pytest.mark.slow
def test_a_catalogue_name_is_fetched_and_generates_on_option_b(
        hub: Hub, tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
        worker_image: str, tiny_models: dict[str, Path]) -> None:
    entry = CATALOGUE["sd15"]
    model = tiny_models["safetensors"]
    hub.add_repo(entry.source.repo, checkpoint_files(model, entry.source.path))
    root = tmp_path_factory.mktemp("fetch-e2e")
    size = model.stat().st_size
    with throwaway_cli(root, docker_client) as cli:
        cli.env.update(clean_env(hub, root))
        # Ctrl-C in the middle of the download: exit 130, the partial file kept.
        hub.pause_at = size // 2
        proc = cli.popen("--model", "sd15", "--prompt", "a lighthouse", *FAST, "--json")
        try:
            assert hub.paused.wait(300), "the download never reached the middle"
            sha = hashlib.sha256(model.read_bytes()).hexdigest()
            part = root / "models" / ".staging" / f"{sha}.part"
            wait_for(lambda: part.exists() and part.stat().st_size >= size // 2 - CHUNK,
                     unless=lambda: proc.poll() is not None, timeout=60)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=120)
        finally:
            hub.pause_at = None
            hub.resume.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stderr
        assert "interrupted while provisioning" in one_line(stderr)
        held = part.stat().st_size
        assert held >= size // 2 - CHUNK
        hub.requests.clear()

        first = cli.run("--model", "sd15", "--prompt", "a lighthouse", *FAST, "--json")
        assert first.returncode == 0, first.stderr
        evs = events(first.stdout)
        assert step_outcomes(evs)["fetch"] == "done"
        model_requests = [h for k, p, h in hub.requests
                          if k == "cdn" and hashlib.sha256(model.read_bytes()).hexdigest() in p]
        assert [h.get("range") for h in model_requests] == [f"bytes={held}-"]
        progress = [e for e in evs if e["event"] == "download_progress"
                    and e["file"] == entry.source.path]
        assert progress[-1]["done"] == progress[-1]["total"] == model.stat().st_size
        assert {"rate", "eta_s", "file"} <= set(progress[-1])
        images = [e for e in evs if e["event"] == "image"]
        assert len(images) == 1 and Path(images[0]["path"]).is_file()
        ledger = next((root / "state").rglob(f"{cli.name}*.json")).read_text()
        assert COMMIT in ledger and "hf_" not in ledger
        served = hub.served_of(model.read_bytes())

        again = cli.run("--model", "sd15", "--prompt", "a lighthouse", *FAST, "--json")
        assert again.returncode == 0, again.stderr
        assert step_outcomes(events(again.stdout))["fetch"] == "skipped"
        assert hub.served_of(model.read_bytes()) == served  # never twice
        assert labelled(docker_client, cli.name)[0]
