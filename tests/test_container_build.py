"""The worker image: its build context, the build through the Docker SDK, and what runs in it."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import docker
import pytest
from conftest import OFFLINE_BASE, unavailable

import sdtui
from sdtui.container import context as context_module
from sdtui.container.build import build_image, existing_image
from sdtui.container.context import build_context
from sdtui.errors import BadInput, BuildFailed

PACKAGE_DIR = Path(sdtui.__file__).parent
CHECK_IMPORTS = (
    "import os, torch, diffusers, transformers, sdtui; print(os.getuid(), sdtui.__file__)"
)


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


# --- the build context ------------------------------------------------------------------------


def test_context_holds_package_dockerfiles_and_generated_pyproject() -> None:
    files = _members(build_context("Dockerfile.local").data)
    assert files["Dockerfile.local"] == (PACKAGE_DIR / "container/Dockerfile.local").read_bytes()
    assert files["Dockerfile"] == (PACKAGE_DIR / "container/Dockerfile").read_bytes()
    assert "sdtui/worker/__init__.py" in files
    assert "sdtui/protocol.py" in files
    # the client's front ends and deployments stay out: changing them rebuilds nothing
    assert not [n for n in files if n.startswith(("sdtui/ui/", "sdtui/deploy/", "sdtui/cli"))]
    assert not [n for n in files if "__pycache__" in n or n.endswith(".pyc")]
    project = tomllib.loads(files["pyproject.toml"].decode())["project"]
    assert project["version"] == sdtui.__version__
    requirements = [
        line.strip()
        for line in (PACKAGE_DIR / "container/requirements-worker.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert project["optional-dependencies"]["worker"] == requirements
    # The worker image carries none of the client's dependencies.
    assert "dependencies" not in project


def test_context_holds_every_sdtui_module_the_worker_imports() -> None:
    """A module the worker imports but the image lacks fails only inside the container, at
    its first import: this catches it here. The worker's entry points, and the fetch runner
    Option A starts on the instance (with what its run() loads), are imported for real and
    every sdtui module they load must be in the context."""
    files = _members(build_context("Dockerfile.local").data)
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, pkgutil, importlib, sdtui.worker as w\n"
         "import sdtui.fetch.to_bucket, sdtui.fetch.download, sdtui.fetch.store\n"
         "for m in pkgutil.iter_modules(w.__path__):\n"
         "    importlib.import_module(f'sdtui.worker.{m.name}')\n"
         "print('\\n'.join(n for n, m in sys.modules.items() if n.startswith('sdtui') "
         "and getattr(m, '__file__', None)))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert "sdtui.fetch.to_bucket" in loaded
    for name in loaded:
        path = name.replace(".", "/")
        assert f"{path}.py" in files or f"{path}/__init__.py" in files, name


def test_tag_is_stable_and_names_version_and_dockerfile() -> None:
    local = build_context("Dockerfile.local", base_image="base:1")
    assert local.tag == build_context("Dockerfile.local", base_image="base:1").tag
    assert local.data == build_context("Dockerfile.local", base_image="base:1").data
    assert local.tag.startswith(f"sdtui-worker:{sdtui.__version__}-")
    cuda = build_context("Dockerfile", base_image="base:1")
    assert cuda.tag.startswith(f"sdtui-worker-cuda:{sdtui.__version__}-")
    assert len(local.tag.rsplit("-", 1)[1]) == 12


def test_tag_changes_with_base_image_args_and_platform() -> None:
    tags = {
        build_context("Dockerfile.local", base_image="base:1").tag,
        build_context("Dockerfile.local", base_image="base:2").tag,
        build_context("Dockerfile.local", base_image="base:1", platform="linux/arm64").tag,
        build_context("Dockerfile.local", base_image="base:1",
                      build_args={"TORCH_INDEX_URL": "https://example.invalid/whl"}).tag,
    }
    assert len(tags) == 4


def test_tag_changes_when_the_package_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "sdtui"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(context_module, "_package_root", lambda: copy)
    before = build_context("Dockerfile.local", base_image="base:1").tag
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"not part of the package")
    assert build_context("Dockerfile.local", base_image="base:1").tag == before
    (copy / "protocol.py").write_text((copy / "protocol.py").read_text() + "\n# changed\n")
    assert build_context("Dockerfile.local", base_image="base:1").tag != before


def test_ca_bundle_travels_in_the_context(tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with_ca = build_context("Dockerfile.local", bundle)
    assert _members(with_ca.data)["extra-ca.crt"] == bundle.read_bytes()
    assert "extra-ca.crt" not in _members(build_context("Dockerfile.local").data)
    assert with_ca.tag != build_context("Dockerfile.local").tag


def test_bad_ca_bundle_and_unknown_dockerfile_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read CA bundle"):
        build_context("Dockerfile.local", tmp_path / "missing.pem")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    with pytest.raises(BadInput, match="no PEM certificate"):
        build_context("Dockerfile.local", not_pem)
    with pytest.raises(BadInput, match="unknown Dockerfile 'Dockerfile.gpu'") as caught:
        build_context("Dockerfile.gpu")
    assert "Dockerfile.local" in (caught.value.fix or "")


# --- the image, built and run through the Docker SDK --------------------------------------------


def _run(client: docker.DockerClient, image: str, *command: str, **kwargs) -> str:
    out = client.containers.run(image, list(command), remove=True, stderr=True, **kwargs)
    return out.decode()


@pytest.mark.docker
@pytest.mark.slow
def test_worker_image_runs_non_root_and_imports_the_worker_stack(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    out = _run(docker_client, worker_image, "-c", CHECK_IMPORTS, entrypoint=["python3"])
    uid, package_file = out.strip().splitlines()[-1].split()
    assert uid == "1000"
    assert "site-packages" in package_file  # installed, not a stray source copy
    config = docker_client.images.get(worker_image).attrs["Config"]
    assert config["Entrypoint"] == ["python3", "-m", "sdtui.worker"]
    assert config["User"] == "sdtui"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.docker
@pytest.mark.slow
def test_worker_image_bakes_no_weights_and_reads_models_from_data(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    script = (
        "find / -xdev -type f \\( -name '*.ckpt' -o -name '*.safetensors' -o -name '*.bin' "
        "-o -name '*.pt' \\) -size +1M 2>/dev/null; ls -A /data; echo end"
    )
    out = _run(docker_client, worker_image, "-c", script, entrypoint=["sh"])
    assert out.split() == ["end"]


@pytest.mark.docker
@pytest.mark.slow
def test_rebuild_returns_the_same_tag_without_building(
    docker_client: docker.DockerClient, worker_image: str
) -> None:
    lines: list[str] = []
    again = build_image(docker_client, dockerfile="Dockerfile.local", base_image=OFFLINE_BASE,
                        on_log=lines.append)
    assert again == worker_image
    assert lines == []
    assert existing_image(docker_client, base_image=OFFLINE_BASE) == worker_image


@pytest.mark.docker
def test_missing_base_image_fails_at_the_from_step(docker_client: docker.DockerClient) -> None:
    lines: list[str] = []
    with pytest.raises(BuildFailed) as caught:
        build_image(docker_client, base_image="sdtui-test/no-such-base:missing",
                    on_log=lines.append)
    message = caught.value.message
    assert "Step 2/" in message and ": FROM ${BASE_IMAGE}" in message
    assert "sdtui-test/no-such-base:missing" in message
    assert caught.value.fix == ("pull it (docker pull IMAGE) or pass --base-image with an image "
                                "this engine has")
    assert any(line.startswith("Step 1/") for line in lines)


@pytest.fixture(scope="module")
def broken_python_base(docker_client: docker.DockerClient) -> str:
    """The offline base with a python3 that fails: the image build's RUN step must fail."""
    if not docker_client.images.list(name=OFFLINE_BASE):
        unavailable(f"base image {OFFLINE_BASE} is missing: run scripts/offline-base-image.sh")
    dockerfile = (
        f"FROM {OFFLINE_BASE}\n"
        "RUN rm /opt/venv/bin/python3 && printf '#!/bin/sh\\necho broken python here >&2\\n"
        "exit 3\\n' > /opt/venv/bin/python3 && chmod +x /opt/venv/bin/python3\n"
    )
    tag = "sdtui-test/broken-python:latest"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_failing_run_step_is_named_with_its_output(
    docker_client: docker.DockerClient, broken_python_base: str
) -> None:
    with pytest.raises(BuildFailed) as caught:
        build_image(docker_client, base_image=broken_python_base, on_log=lambda line: None)
    first_line, *rest = caught.value.message.splitlines()
    assert " : RUN set -eu;" in first_line and first_line.startswith("image build failed at Step ")
    assert "returned a non-zero code: 3" in first_line
    assert any("broken python here" in line for line in rest)


@pytest.mark.docker
@pytest.mark.slow
def test_installed_wheel_builds_its_worker_image_without_a_checkout(
    docker_client: docker.DockerClient, worker_image: str, tmp_path: Path
) -> None:
    """`pip install sdtui` then a build: the context comes from the installed files alone."""
    repo = PACKAGE_DIR.parent
    source = tmp_path / "source"  # a copy, so that making the wheel leaves the checkout clean
    shutil.copytree(PACKAGE_DIR, source / "sdtui", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements-dev.txt", "LICENSE"):
        if (repo / name).exists():
            shutil.copy(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("sdtui-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    script = (
        "import sys, sdtui\n"
        "from sdtui.container.docker_engine import connect_engine\n"
        "from sdtui.container.build import build_image\n"
        f"assert sdtui.__file__.startswith({str(site)!r}), sdtui.__file__\n"
        f"print(build_image(connect_engine(), base_image={OFFLINE_BASE!r}, on_log=print))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={
        "PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    tag = done.stdout.strip().splitlines()[-1]
    assert tag.startswith(f"sdtui-worker:{sdtui.__version__}-")
    try:
        out = _run(docker_client, tag, "-c", CHECK_IMPORTS, entrypoint=["python3"])
        assert out.strip().splitlines()[-1].startswith("1000 ")
    finally:
        if tag != worker_image:
            docker_client.images.remove(tag, force=True)
