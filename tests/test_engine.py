"""Connecting to the Docker engine: DOCKER_HOST, docker contexts, and a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from sdtui.container.docker_engine import ENGINE_FIX, connect_engine, has_nvidia_runtime
from sdtui.errors import EXIT_DEPLOYMENT, EngineUnreachable


def test_unreachable_engine_gives_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(EngineUnreachable) as caught:
        connect_engine()
    text = str(caught.value)
    assert "\n" not in text
    assert "unix:///nonexistent.sock" in text
    assert "No such file or directory" in text
    assert caught.value.fix == ENGINE_FIX
    assert caught.value.exit_code == EXIT_DEPLOYMENT


def test_refused_tcp_engine_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    with pytest.raises(EngineUnreachable, match=r"tcp://127\.0\.0\.1:9 \(Connection refused\)"):
        connect_engine()


def _write_context(config_dir: Path, name: str, host: str) -> None:
    (config_dir / "config.json").write_text(json.dumps({"currentContext": name}))
    meta_dir = config_dir / "contexts" / "meta" / "0123abcd"
    meta_dir.mkdir(parents=True)
    meta = {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host}}}
    (meta_dir / "meta.json").write_text(json.dumps(meta))


def test_current_docker_context_is_used_without_docker_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_context(tmp_path, "elsewhere", "unix:///nonexistent-context.sock")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(EngineUnreachable, match="nonexistent-context.sock"):
        connect_engine()


def test_docker_host_wins_over_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_context(tmp_path, "elsewhere", "unix:///nonexistent-context.sock")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent-host.sock")
    with pytest.raises(EngineUnreachable, match="nonexistent-host.sock"):
        connect_engine()


@pytest.mark.docker
def test_default_socket_is_used_without_host_or_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client = connect_engine()
    assert client.ping() is True
    assert client.version()["ApiVersion"]


@pytest.mark.docker
def test_engine_without_nvidia_runtime_means_cpu(docker_client: docker.DockerClient) -> None:
    # This machine has no GPU, so its engine offers runc only.
    assert "nvidia" not in (docker_client.info().get("Runtimes") or {})
    assert has_nvidia_runtime(docker_client) is False


class _EngineWithNvidia:
    """An engine with nvidia-container-runtime installed: there is no GPU machine here."""

    def info(self) -> dict:
        return {"Runtimes": {"io.containerd.runc.v2": {}, "nvidia": {"path": "nvidia-runtime"},
                             "runc": {}}}


def test_engine_with_nvidia_runtime_means_gpu() -> None:
    assert has_nvidia_runtime(_EngineWithNvidia()) is True  # type: ignore[arg-type]
