"""Fixtures for the app's tests: isolated dirs, a tiny model, a real worker process, a fake
deployment wired into the app's services."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdtui.settings import Given
from sdtui.ui.checks import Check
from sdtui.ui.core import Services
from sdtui.ui.forms import split_paths

from .fakes import FakeDeployment
from .worker_relay import SubprocessWorker


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var, sub in (("SDTUI_STATE_DIR", "state"), ("SDTUI_CONFIG_DIR", "config"),
                     ("SDTUI_OUTPUTS_DIR", "outputs")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("SDTUI_IMAGE_PROTOCOL", "halfcell")
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ui-model") / "tiny"
    subprocess.run([sys.executable, "-m", "sdtui.devtools.tiny_model", str(out),
                    "--format", "diffusers"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def worker(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[SubprocessWorker]:
    proc = SubprocessWorker(tiny_model, tmp_path_factory.mktemp("worker") / "worker.log")
    client = proc.attach()
    client.wait_ready(timeout=120)
    client.close()
    yield proc
    proc.stop()


def quiet_checks(option: str, values: dict) -> list[Check]:
    return [Check("Docker engine reachable", "ok", "Docker (fake)"),
            Check("Model files readable", "ok" if values.get("models") else "fail",
                  values.get("models", ""))]


def given(option: str | None = None, name: str | None = None,
          generate: dict | None = None, **deployment: object) -> Given:
    """What the command line would give the app (`models` as the form writes it)."""
    if isinstance(deployment.get("models"), str):
        deployment["models"] = split_paths(deployment["models"])  # type: ignore[arg-type]
    return Given(option=option, name=name, deployment=deployment, generate=generate or {})


def fake_services(deployment: FakeDeployment, outputs: Path, **flags: object) -> Services:
    from sdtui.ledger import list_ledgers

    return Services(
        make_deployment=lambda option, values: deployment,
        resume_deployment=lambda ledger: deployment,
        list_deployments=list_ledgers,
        live_checks=quiet_checks,
        out_dir=outputs,
        given=given(**{"models": str(outputs), **flags}),  # type: ignore[arg-type]
    )

