"""The worker's dependency lock against what uses it: the requirement files it is generated
from, the test environment CI runs, and the CUDA image, which is too large to build here, so
its dependency set is checked instead: the torch it installs is the lock's, the lock resolves
with that torch (pip's resolver, metadata only, no CUDA wheel downloaded), and the lock's
transformers, diffusers and accelerate accept it (transformers' own import guard, run with the
image's torch version, and the torch bounds in their metadata)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from unittest import mock

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from sdtui.container.build import BuildFailed, build_image
from sdtui.container.context import DEFAULT_BASE_IMAGE
from sdtui.container.lock import REGENERATE, canonical, mismatches, public_version, read_lock
from sdtui.deploy.aws.settings import AwsSettings
from tests.lock_checks import requirement_lines, unpinned

CONTAINER = Path(__file__).resolve().parents[1] / "sdtui" / "container"
LOCK = CONTAINER / "requirements-worker.lock"
REQUIREMENT_FILES = ("requirements-worker.txt", "requirements-worker-nodeps.txt")
CUDA_INDEX = re.compile(r"/whl/(cu\d+)/?$")
PYTORCH_IMAGE = re.compile(r"^pytorch/pytorch:(\d+\.\d+\.\d+)-")


def pins() -> dict[str, str]:
    return read_lock(LOCK.read_text())


def requirements(name: str) -> list[Requirement]:
    return requirement_lines(CONTAINER / name)


def dockerfile_args(name: str) -> dict[str, str]:
    text = (CONTAINER / name).read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))


def cuda_image_torch() -> str:
    """The torch the CUDA image runs when built as sdtui builds it (BASE_IMAGE from the AWS
    settings): a pytorch/pytorch base's own torch is kept by pip, anything else gets the lock's
    pin from TORCH_INDEX_URL; the index names the variant."""
    args = dockerfile_args("Dockerfile")
    variant = CUDA_INDEX.search(args["TORCH_INDEX_URL"])
    assert variant, f"Dockerfile's TORCH_INDEX_URL {args['TORCH_INDEX_URL']} is no CUDA index"
    base = AwsSettings.__dataclass_fields__["base_image"].default
    carried = PYTORCH_IMAGE.match(base)
    version = carried.group(1) if carried else pins()["torch"]
    return f"{version}+{variant.group(1)}"


def test_the_lock_pins_every_worker_requirement():
    stale = [line for name in REQUIREMENT_FILES
             for line in unpinned(requirements(name), pins(), name)]
    assert not stale, (f"{LOCK.name} is out of date: " + "; ".join(stale)
                       + f". Run `{REGENERATE}`, then scripts/setup-test-env.sh, and commit "
                       "the lock")


def test_the_test_environment_runs_the_locked_set():
    problems = mismatches(pins())
    assert not problems, ("the test environment is not the locked set: " + "; ".join(problems)
                          + ". Run scripts/setup-test-env.sh")


def test_both_images_default_to_a_python_3_11_base_without_torch():
    """The lock is resolved for CPython 3.11; a base with its own torch would keep it."""
    assert sys.version_info[:2] == (3, 11)
    for name in ("Dockerfile", "Dockerfile.local"):
        assert dockerfile_args(name)["BASE_IMAGE"] == DEFAULT_BASE_IMAGE
    assert DEFAULT_BASE_IMAGE.startswith("python:3.11-")
    assert AwsSettings.__dataclass_fields__["base_image"].default == DEFAULT_BASE_IMAGE


def test_the_cuda_image_installs_the_locked_torch():
    assert public_version(cuda_image_torch()) == pins()["torch"]
    assert dockerfile_args("Dockerfile.local")["TORCH_INDEX_URL"].endswith("/whl/cpu")


@pytest.mark.slow
def test_the_lock_resolves_with_the_cuda_images_torch_and_nothing_else():
    """pip resolves the lock (the packages it installs with their dependencies) with the CUDA
    image's torch version to exactly the lock: nothing missing, nothing different. Metadata
    only: the resolution of torch==X reads the CPU wheel's, so no CUDA wheel is downloaded."""
    locked = pins()
    no_deps = {canonical(r.name) for r in requirements("requirements-worker-nodeps.txt")}
    torch = public_version(cuda_image_torch())
    wanted = [f"{name}=={version}" for name, version in locked.items()
              if name not in no_deps and name != "torch"] + [f"torch=={torch}"]
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", "-", *wanted], capture_output=True, text=True, timeout=600)
    errors = [line for line in run.stderr.splitlines() if not line.startswith("WARNING: Location")]
    assert run.returncode == 0, f"the lock does not resolve with torch {torch}: " + "\n".join(
        errors[-15:])
    resolved = {canonical(i["metadata"]["name"]): public_version(i["metadata"]["version"])
                for i in json.loads(run.stdout)["install"]}
    expected = {name: version for name, version in locked.items() if name not in no_deps}
    expected["torch"] = torch
    assert resolved == expected, (
        f"resolving the lock pulls in {sorted(set(resolved) - set(expected))} and changes "
        f"{sorted(n for n in expected if resolved.get(n) != expected[n])}; run `{REGENERATE}`")


def torch_bounds(distribution: str) -> list[Requirement]:
    """Every torch requirement in a distribution's metadata, whatever extra it sits in (pip
    enforces none of the optional ones, which is how transformers 5 met torch 2.5)."""
    found = []
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if canonical(requirement.name) == "torch":
            found.append(requirement)
    return found


def test_the_locked_transformers_diffusers_and_accelerate_accept_the_cuda_images_torch():
    """The torch bounds in their metadata, in whatever extra they sit."""
    torch = cuda_image_torch()
    environment = default_environment()
    for distribution in ("transformers", "diffusers", "accelerate"):
        assert metadata.version(distribution) == pins()[distribution]
        for requirement in torch_bounds(distribution):
            extras = re.findall(r'extra == "([^"]+)"', str(requirement.marker or ""))
            if requirement.marker and not any(
                    requirement.marker.evaluate({**environment, "extra": e})
                    for e in extras or [""]):
                continue
            assert requirement.specifier.contains(public_version(torch)), (
                f"{distribution} {metadata.version(distribution)} wants {requirement}, the CUDA "
                f"image runs torch {torch}")


def test_transformers_import_guard_accepts_the_cuda_images_torch():
    """transformers' own guard, run with the image's torch version: below its minimum it
    disables PyTorch, and CLIPTextModel cannot be imported."""
    from transformers.utils import import_utils

    torch = cuda_image_torch()
    assert metadata.version("transformers") == pins()["transformers"]
    with mock.patch.object(import_utils, "_is_package_available", return_value=(True, torch)):
        accepted = import_utils.is_torch_available.__wrapped__()
    assert accepted, (f"transformers {metadata.version('transformers')} disables torch {torch} "
                      "(its import guard): the CUDA image could not load a model")


@pytest.fixture
def base_with_old_torch(docker_client):
    """A base image that carries its own torch 2.5.1, as pytorch/pytorch:2.5.1-... does (only
    its metadata: nothing gets far enough to import it)."""
    from conftest import OFFLINE_BASE

    tag = f"sdtui-test/torch-2.5.1-base:{uuid.uuid4().hex[:8]}"
    site = "/opt/old-torch/lib/python3.11/site-packages/torch-2.5.1.dist-info"
    dockerfile = (
        f"FROM {OFFLINE_BASE}\n"
        f"RUN python3 -m venv --without-pip /opt/old-torch && mkdir -p {site} "
        f"&& printf 'Metadata-Version: 2.1\\nName: torch\\nVersion: 2.5.1\\n' > {site}/METADATA "
        f"&& : > {site}/RECORD\n"
        "ENV PATH=/opt/old-torch/bin:$PATH\n"
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_the_cuda_dockerfile_refuses_a_base_whose_torch_is_not_the_locked_one(
        docker_client, base_with_old_torch):
    """The original defect, built for real: a base carrying torch 2.5.1 under a lock whose
    transformers needs 2.6 or newer. The build stops before installing anything."""
    lines: list[str] = []
    with pytest.raises(BuildFailed) as caught:
        build_image(docker_client, dockerfile="Dockerfile", base_image=base_with_old_torch,
                    on_log=lines.append)
    message = caught.value.message
    assert f"the base image carries torch 2.5.1, the worker's lock pins torch=={pins()['torch']}" \
        in message
    assert not any("Collecting" in line for line in lines)


def instructions(name: str) -> list[str]:
    """A Dockerfile's instructions, comments dropped and continuation lines joined, with what
    only the CUDA image has taken out: torch's index (its variant, checked above) and the
    NVIDIA runtime's variables."""
    text = re.sub(r"^\s*#.*\n", "", (CONTAINER / name).read_text(), flags=re.MULTILINE)
    out = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = re.sub(r"\s+NVIDIA_\w+=\S+", "", line).strip()
        out.append(re.sub(r"^ARG TORCH_INDEX_URL=\S+$", "ARG TORCH_INDEX_URL", line))
    return [line for line in out if line]


def test_the_cuda_image_installs_exactly_what_the_cpu_image_does():
    """What the CPU image's container tests prove it reads (every model format: the `gguf`
    package, torch's float8, diffusers' converters) the CUDA image has too: the same install
    script on the same lock, the same package, nothing else. Only torch's wheel index (the
    lock's torch version in either) and the NVIDIA runtime's variables differ."""
    assert instructions("Dockerfile") == instructions("Dockerfile.local")
    assert any(line.startswith("RUN") and "install-worker-deps.sh" in line
               for line in instructions("Dockerfile"))


# What the worker's libraries import only on the path that needs it, never named in sdtui's
# source (a LoRA without peft: "PEFT backend is required for `load_lora_weights()`").
LIBRARY_BACKENDS = {"peft": "diffusers' load_lora_weights (every LoRA)",
                    "gguf": "diffusers' GGUF quantizer (every .gguf transformer)",
                    "accelerate": "diffusers' enable_model_cpu_offload (offloaded text encoders)",
                    "torchsde": "diffusers' DPMSolverSDEScheduler (DPM++ SDE)"}


def test_every_package_the_worker_imports_is_in_the_lock():
    """Both images hold the lock and nothing more, so a package the worker's code imports that
    the lock lacks fails only inside a container, at that import: for the CUDA image, on a GPU
    instance. Read from the source the images hold (the build context), lazy imports included
    (`gguf` is imported only as a GGUF file loads), and what its libraries import lazily."""
    import ast
    import tarfile

    from sdtui.container.context import build_context

    with tarfile.open(fileobj=io.BytesIO(build_context("Dockerfile").data)) as tar:
        sources = {m.name: tar.extractfile(m).read() for m in tar.getmembers()
                   if m.isfile() and m.name.endswith(".py")}
    imported: dict[str, str] = {}
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("sdtui", "__future__"):
                    imported.setdefault(top, name)
    assert "gguf" in imported and "safetensors" in imported
    imported |= LIBRARY_BACKENDS
    providers = metadata.packages_distributions()
    missing = [f"{module} (imported by {where})" for module, where in sorted(imported.items())
               if not any(canonical(d) in pins() for d in providers.get(module, []))]
    assert not missing, (f"the worker imports what {LOCK.name} does not hold: "
                         + "; ".join(missing) + f". Add it to {REQUIREMENT_FILES[0]} and run "
                         f"`{REGENERATE}`")
