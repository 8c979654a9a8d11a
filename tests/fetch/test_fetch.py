"""The fetch layer against the stand-ins, through the real huggingface_hub client and real
HTTP: what lands in the store, resume, checksums, tokens and refusals."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdtui.errors import BadInput, DeploymentError
from sdtui.fetch import download
from sdtui.fetch.progress import Meter
from sdtui.fetch.resolve import resolve
from sdtui.fetch.store import Store
from tests.fetch.conftest import clean_env
from tests.fetch.standin import COMMIT, Hub

BIG = os.urandom(3 * 1024 * 1024 + 17)
YAML = b"model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"


def fetch(ref: str, updates: list | None = None) -> tuple[Store, object, list]:
    store = Store(Path(os.environ["SDTUI_MODELS_DIR"]))
    resolved = resolve(ref)
    seen = updates if updates is not None else []
    got = download.fetch(store, resolved, Meter(lambda *u: seen.append(u), interval=0))
    return store, resolved, got


def test_a_single_file_comes_with_its_sidecars_checked(hub: Hub) -> None:
    hub.add_repo("org/sd2", {"v2.safetensors": BIG, "v2.yaml": YAML,
                             "v2.config/scheduler/scheduler_config.json": b"{}",
                             "other.safetensors": b"x" * 2000, "README.md": b"# hi"})
    updates: list = []
    store, resolved, got = fetch("hf:org/sd2/v2.safetensors", updates)
    model = store.model_path(resolved)
    assert model.read_bytes() == BIG
    assert (model.parent / "v2.yaml").read_bytes() == YAML
    assert (model.parent / "v2.config/scheduler/scheduler_config.json").read_bytes() == b"{}"
    assert not (model.parent / "other.safetensors").exists()
    assert resolved.source == f"hf:org/sd2/v2.safetensors@{COMMIT}"
    assert resolved.record()["files"]["v2.safetensors"] == hashlib.sha256(BIG).hexdigest()
    assert hub.served_of(BIG) == len(BIG)  # through the CDN redirect
    last = [u for u in updates if u[0] == "v2.safetensors"][-1]
    assert last[1] == last[2] == len(BIG)
    assert not list(store.staging.glob("*.part"))


def test_a_diffusers_repo_brings_the_components_the_worker_loads(hub: Hub,
                                                                  tiny_diffusers: Path) -> None:
    hub.add_folder("org/tiny-sd", tiny_diffusers)
    repo = hub.repos["org/tiny-sd"]
    repo.files["unet/diffusion_pytorch_model.fp16.safetensors"] = b"f" * 3000
    # diffusers' sharded variant names (SD 3.5's and Klein's encoders are sharded)
    repo.files["text_encoder/model.fp16-00001-of-00002.safetensors"] = b"f" * 3000
    repo.files["safety_checker/model.safetensors"] = b"s" * 3000
    store, resolved, _ = fetch("https://huggingface.co/org/tiny-sd/tree/main")
    model = store.model_path(resolved)
    assert (model / "model_index.json").is_file()
    for name, data in repo.files.items():
        if "fp16" in name or name.startswith("safety_checker/"):
            assert not (model / name).exists(), name
        else:
            assert (model / name).read_bytes() == data, name


def test_a_cut_connection_resumes_where_it_stopped(hub: Hub) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG})
    hub.cut_after = len(BIG) // 2
    store, resolved, _ = fetch("hf:org/m")
    assert store.model_path(resolved).read_bytes() == BIG
    assert_resumed(hub)


def assert_resumed(hub: Hub) -> None:
    """What the client held when the first transfer stopped (all but its last read) is not
    asked for again: restarting from zero would serve the first half twice."""
    resumed = [h.get("range") for k, _, h in hub.requests if k == "cdn"][1]
    assert resumed is not None, "the second request asked for the whole file again"
    offset = int(resumed.removeprefix("bytes=").rstrip("-"))
    assert len(BIG) // 2 - download.CHUNK <= offset <= len(BIG) // 2
    assert hub.served_of(BIG) == len(BIG) + (len(BIG) // 2 - offset)


def test_corrupt_bytes_are_refused_and_deleted(hub: Hub) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG})
    hub.corrupt = True
    with pytest.raises(DeploymentError, match="arrived corrupt.*partial file was deleted"):
        fetch("hf:org/m")
    store = Store(Path(os.environ["SDTUI_MODELS_DIR"]))
    assert not list(store.staging.glob("*.part"))
    assert not list(store.root.glob("hf/**/m.safetensors"))
    hub.corrupt = False
    store, resolved, _ = fetch("hf:org/m")
    assert store.model_path(resolved).read_bytes() == BIG


def test_a_file_already_fetched_is_never_fetched_again(hub: Hub) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG})
    hub.add_repo("org/copy", {"same.safetensors": BIG})
    fetch("hf:org/m")
    _, resolved, got = fetch("hf:org/m")
    assert got == []
    store, resolved, got = fetch("hf:org/copy")  # the same bytes under another name
    assert got == [] and store.model_path(resolved).read_bytes() == BIG
    assert hub.served_of(BIG) == len(BIG)


def test_a_gated_repo_names_the_licence_page_and_hf_token(hub: Hub, monkeypatch) -> None:
    hub.add_repo("org/gated", {"g.safetensors": BIG}, gated=True)
    with pytest.raises(BadInput) as refused:
        fetch("hf:org/gated")
    assert f"{hub.url}/org/gated" in str(refused.value) and "HF_TOKEN" in str(refused.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(BadInput, match="gated repo"):
        fetch("hf:org/gated")  # the token's account has not accepted the licence: 403
    monkeypatch.setenv("HF_TOKEN", hub.token)
    store, resolved, _ = fetch("hf:org/gated")
    assert store.model_path(resolved).read_bytes() == BIG
    cdn_auth = [h for k, _, h in hub.requests if k == "cdn" and "authorization" in h]
    assert cdn_auth == [], "the token followed the redirect to another host"
    assert hub.token not in "".join(p.read_text(errors="replace")
                                    for p in store.root.rglob("*") if p.is_file()
                                    and p.stat().st_size < 100_000)


@pytest.mark.parametrize(("ref", "says"), [
    ("sd1.5", "unknown model name 'sd1.5'.*did you mean sd15"),
    ("hf:org", "no ORG/REPO"),
    ("hf:org/m/notes.txt", "not a .safetensors or .ckpt"),
    ("https://example.com/m.safetensors", "only huggingface.co and civitai.com"),
    ("https://civitai.com/models/123/some-model", "names a model but not one of its versions"),
    ("civitai:abc", "not a Civitai model-version id"),
    ("hf:org/docs", "holds no model sdtui can run.*README.md"),
    ("hf:org/lora", "is a LoRA.*loras/"),
    ("hf:org/two", "several checkpoints"),
    ("hf:org/sd-vae-ft-mse", "is a VAE"),
    ("hf:org/m/vae-ft-mse-840000-ema-pruned.safetensors", "is a VAE"),
    ("hf:org/missing", "no Hugging Face repo org/missing"),
    ("hf:org/m@nope", "has no revision 'nope'"),
    ("civitai:7", "LoRA.*loras/"),
    ("civitai:8", "embedding"),
    ("civitai:9", "archive"),
    ("civitai:404", "no model version 404"),
    ("flux1-schnell:q8@" + COMMIT, "from 3 repos.*one commit each; 1 given"),
    ("sd15@a+b", "from 1 repo .*2 given"),
    ("flux1-dev:q4@main+x!y", "is not COMMIT"),
])
def test_bad_names_are_refused_before_anything_is_fetched(hub: Hub, ref: str, says: str) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG,
                           "vae-ft-mse-840000-ema-pruned.safetensors": b"v" * 2000})
    hub.add_repo("org/sd-vae-ft-mse", {"config.json": b"{}",
                                       "diffusion_pytorch_model.safetensors": b"v" * 2000})
    hub.add_repo("org/docs", {"README.md": b"# nothing"})
    hub.add_repo("org/lora", {"pytorch_lora_weights.safetensors": b"l" * 2000}, tags=["lora"])
    hub.add_repo("org/two", {"a.safetensors": b"a" * 2000, "b.ckpt": b"b" * 2000})
    hub.add_version(7, "LORA", [{"name": "l.safetensors", "type": "Model", "data": b"l"}])
    hub.add_version(8, "TextualInversion", [{"name": "e.pt", "type": "Model", "data": b"e"}])
    hub.add_version(9, "Checkpoint", [{"name": "m.zip", "type": "Archive", "data": b"z"}])
    with pytest.raises(BadInput, match=says):
        fetch(ref)
    assert not hub.served and not Path(os.environ["SDTUI_MODELS_DIR"]).exists()


def test_civitai_needs_its_token_and_follows_the_signed_redirect(hub: Hub, monkeypatch) -> None:
    hub.civitai_token = "civ_secret"
    hub.add_version(42, "Checkpoint", [
        {"name": "m.safetensors", "type": "Model", "data": BIG, "primary": True},
        {"name": "m.zip", "type": "Training Data", "data": b"zip"}])
    with pytest.raises(BadInput, match="CIVITAI_API_TOKEN"):
        fetch("https://civitai.com/models/420/tiny?modelVersionId=42")
    monkeypatch.setenv("CIVITAI_API_TOKEN", "civ_secret")
    store, resolved, _ = fetch("civitai:42")
    assert store.model_path(resolved).read_bytes() == BIG
    assert any("X-Amz-Signature" in p for k, p, _ in hub.requests if k == "cdn")


def test_not_enough_free_space_is_said_before_the_first_byte(hub: Hub, monkeypatch) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG})
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda p: type("U", (), {"free": len(BIG) // 2})())
    with pytest.raises(DeploymentError, match="not enough free space"):
        fetch("hf:org/m")
    assert hub.served_of(BIG) == 0


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch) -> Path:
    """A 5 MiB tmpfs as SDTUI_MODELS_DIR."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (run as root): {mounted.stderr}", pytrace=False)
    monkeypatch.setenv("SDTUI_MODELS_DIR", str(disk / "models"))
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_that_fills_up_mid_fetch_stops_in_one_line_and_resumes(
        hub: Hub, small_disk: Path) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG})
    filler = small_disk / "someone-else.bin"
    staging = small_disk / "models" / ".staging"

    def fill_once_half_is_written() -> None:
        # Another program takes the room once the fetch is under way: the check before the
        # first byte passed, the disk fills anyway.
        _wait(lambda: any(p.stat().st_size >= len(BIG) // 2 - download.CHUNK
                          for p in staging.glob("*.part")))
        _fill(filler)

    hub.hook_at = (len(BIG) // 2, fill_once_half_is_written)
    with pytest.raises(DeploymentError, match="the disk filled up while fetching m.safetensors"):
        fetch("hf:org/m")
    store = Store(small_disk / "models")
    part = next(store.staging.glob("*.part"))
    held = part.stat().st_size
    assert 0 < held < len(BIG) and part.read_bytes() == BIG[:held]
    assert not list(store.root.glob("hf/**/m.safetensors"))
    filler.unlink()
    store, resolved, _ = fetch("hf:org/m")
    assert store.model_path(resolved).read_bytes() == BIG
    assert [h.get("range") for k, _, h in hub.requests if k == "cdn"][1] == f"bytes={held}-"


def _fill(path: Path) -> None:
    with path.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()


FETCH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from sdtui.fetch import download
    from sdtui.fetch.progress import Meter
    from sdtui.fetch.resolve import resolve
    from sdtui.fetch.store import Store
    download.fetch(Store(Path(os.environ["SDTUI_MODELS_DIR"])), resolve(sys.argv[1]),
                   Meter(lambda *u: None))
""")


def test_a_killed_client_resumes_on_the_next_run(hub: Hub, tmp_path: Path) -> None:
    hub.add_repo("org/m", {"m.safetensors": BIG})
    hub.pause_at = len(BIG) // 2
    env = clean_env(hub, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", FETCH, "hf:org/m"], env=env)
    try:
        assert hub.paused.wait(60), "the client never reached the middle of the file"
        part = Store(tmp_path / "models").part(resolve("hf:org/m").files[0])
        _wait(lambda: part.exists() and part.stat().st_size >= len(BIG) // 2 - download.CHUNK)
        proc.kill()
        proc.wait(30)
    finally:
        hub.pause_at = None
        hub.resume.set()
    subprocess.run([sys.executable, "-c", FETCH, "hf:org/m"], env=env, check=True, timeout=120)
    assert_resumed(hub)
    assert next((tmp_path / "models").glob("hf/**/m.safetensors")).read_bytes() == BIG


def _wait(condition, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition was never reached"
        time.sleep(0.02)


def test_lora_files_are_fetched_into_loras_beside_the_model(hub: Hub, tmp_path: Path,
                                                             monkeypatch) -> None:
    from sdtui.deploy.local_settings import LocalSettings

    lora = b"L" * 5000
    header = b'{"__metadata__": {}}'
    model = struct.pack("<Q", len(header)) + header + BIG
    hub.add_repo("org/m", {"m.safetensors": model})
    hub.add_repo("org/style", {"pytorch_lora_weights.safetensors": lora, "README.md": b"#"},
                 tags=["lora"])
    monkeypatch.setenv("CIVITAI_API_TOKEN", "t")
    hub.add_version(77, "LORA", [{"name": "ink.safetensors", "type": "Model", "data": b"I" * 4000,
                                  "primary": True}])
    settings = LocalSettings(models=["hf:org/m"], name="t",
                             lora_files=["hf:org/style", "https://civitai.com/models/7?modelVersionId=77"])
    settings.validate()
    store = settings.store
    for resolved in settings.to_fetch():
        download.fetch(store, resolved, Meter(lambda *u: None))
    names = {name: src.read_bytes() for src, name in settings.files()}
    assert names["loras/pytorch_lora_weights.safetensors"] == lora
    assert names["loras/ink.safetensors"] == b"I" * 4000
    assert names["m.safetensors"] == model


@pytest.mark.parametrize(("lora", "says"), [
    ("civitai:5", "not a LoRA"),
    ("sd15", "give hf:ORG/REPO/FILE.safetensors or civitai:ID"),
    ("hf:org/two", "2 .safetensors files, not one LoRA"),
])
def test_a_lora_file_that_is_no_lora_is_refused(hub: Hub, lora: str, says: str) -> None:
    from sdtui.deploy.local_settings import LocalSettings

    hub.add_repo("org/m", {"m.safetensors": BIG})
    hub.add_repo("org/two", {"a.safetensors": b"a" * 2000, "b.safetensors": b"b" * 2000})
    hub.add_version(5, "Checkpoint", [{"name": "c.safetensors", "type": "Model", "data": b"c"}])
    with pytest.raises(BadInput, match=says):
        LocalSettings(models=["hf:org/m"], name="t", lora_files=[lora]).validate()
    assert not hub.served


def test_the_stderr_bar_shows_bytes_rate_and_time_left() -> None:
    import io

    from sdtui.deploy.base import DownloadProgress
    from sdtui.reporter import Reporter

    err = io.StringIO()
    Reporter(False, err=err, out=io.StringIO()).deploy(
        DownloadProgress("fetch", 3 * 2**20, 3 * 2**20, "bytes", "m.safetensors", 2.5 * 2**20,
                         0.0))
    assert "fetch m.safetensors [" in err.getvalue()
    assert "3/3 MiB 2.5 MiB/s, 0 s left" in err.getvalue()


def test_an_api_answer_past_its_bound_is_refused_in_one_line(hub: Hub) -> None:
    hub.oversized = True
    with pytest.raises(DeploymentError, match="sent more than 4096 KiB"):
        fetch("civitai:1")


def test_a_second_fetcher_of_the_same_file_is_told_to_wait(hub: Hub) -> None:
    import fcntl

    hub.add_repo("org/m", {"m.safetensors": BIG})
    store = Store(Path(os.environ["SDTUI_MODELS_DIR"]))
    store.staging.mkdir(parents=True)
    sha = hashlib.sha256(BIG).hexdigest()
    with (store.staging / f"{sha}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process's fetch of the same file
        with pytest.raises(DeploymentError, match="another sdtui is fetching m.safetensors"):
            fetch("hf:org/m")
    assert hub.served_of(BIG) == 0
    store, resolved, _ = fetch("hf:org/m")
    assert store.model_path(resolved).read_bytes() == BIG


def test_a_file_named_outside_its_folder_is_never_written(hub: Hub, tiny_diffusers: Path) -> None:
    hub.add_folder("org/evil", tiny_diffusers)
    hub.repos["org/evil"].files["unet/../../../../escaped.json"] = b"{}"
    with pytest.raises(DeploymentError, match="names a file outside its folder"):
        fetch("hf:org/evil")
    root = Path(os.environ["SDTUI_MODELS_DIR"])
    assert not list(root.parent.rglob("escaped.json"))
