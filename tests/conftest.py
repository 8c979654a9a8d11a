"""Session fixtures shared by every test: the Docker engine and the worker image.

Without an engine the Docker tests skip with a loud reason; under CI=true they fail instead,
because a green CI run must mean the container tests ran.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

# The worker's setting (sdtui/worker/__main__.py) for the tests' own torch, set before anything
# imports it: beside another busy process OpenMP's spinning threads made CPU work many times
# slower (bench/bench_contention.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import docker
import pytest

from sdtui.container.build import build_image, image_exists
from sdtui.container.docker_engine import connect_engine
from sdtui.errors import EngineUnreachable

IN_CI = os.environ.get("CI", "").lower() == "true"
OFFLINE_BASE = os.environ.get("SDTUI_TEST_BASE_IMAGE", "sdtui-base:offline")
_LOUD = "!!! DOCKER TESTS DID NOT RUN !!!"
_skipped_for_docker: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # A run started in the background by a non-interactive shell (`cmd &` in a script) has
    # SIGINT ignored, and an ignored signal stays ignored across exec: every sdtui the tests
    # start would shrug off the Ctrl-C that the fault matrix sends and run to the end. A
    # handler, unlike SIG_IGN, is reset to the default on exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def unavailable(reason: str) -> None:
    """Skip loudly here; fail under CI=true, where everything must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: Docker tests must run)", pytrace=False)
    _skipped_for_docker.append(reason)
    pytest.skip(f"{_LOUD} {reason}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = connect_engine()
    except EngineUnreachable as exc:
        unavailable(f"no Docker engine: {exc} (scripts/start-dockerd.sh starts one)")
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _docker_marked_tests_need_the_engine(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_client")


@pytest.fixture(scope="session")
def worker_image(docker_client: docker.DockerClient) -> str:
    """The worker image from Dockerfile.local on the offline base, built through build_image."""
    if not image_exists(docker_client, OFFLINE_BASE):
        unavailable(f"base image {OFFLINE_BASE} is missing: run scripts/offline-base-image.sh")
    return build_image(docker_client, dockerfile="Dockerfile.local", base_image=OFFLINE_BASE,
                       on_log=lambda line: None)


# --- the AWS harness's servers (tests/aws/conftest.py has the rest) ----------------------------
# Session-wide here, not in tests/aws/, so that every module uses the same two: a module that
# imported them from tests/aws/conftest.py would get servers of its own, and a registry of its
# own means the worker image (about 2 GB) compressed and pushed all over again.


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from aws.conftest import serve_moto

    yield from serve_moto(tmp_path_factory)


@pytest.fixture(scope="session")
def ecr_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry standing in for the account's ECR registry, taking moto's ECR token."""
    from aws.registry import MOTO_PASSWORD, MOTO_USER, serve_registry

    with serve_registry(tmp_path_factory.mktemp("ecr-registry"), MOTO_USER,
                        MOTO_PASSWORD) as address:
        yield address


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped_for_docker:
        terminalreporter.section(_LOUD, sep="!", red=True, bold=True)
        for reason in sorted(set(_skipped_for_docker)):
            terminalreporter.write_line(reason, red=True)


# --- tiny models ------------------------------------------------------------------------------
# The models engineer's fixtures (`tiny_models` and friends) live in tests/helpers_models.py and
# are re-exported here so that every test module can use them.
try:
    from helpers_models import *  # noqa: F403
except ModuleNotFoundError as exc:
    if exc.name != "helpers_models":
        raise
