"""Connect to the Docker engine the way the docker CLI would: DOCKER_HOST, then the current
docker context, then the platform default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import docker.errors
import requests

from sdtui.errors import EngineUnreachable

ENGINE_FIX = "start Docker Desktop or dockerd, or set DOCKER_HOST"
PING_TIMEOUT_S = 10


def connect_engine(base_url: str | None = None) -> docker.DockerClient:
    """A client for a Docker engine that answered a ping; EngineUnreachable otherwise."""
    url = base_url or os.environ.get("DOCKER_HOST") or context_endpoint()
    where = url or "the default socket"
    try:
        if url:
            client = docker.DockerClient(base_url=url, timeout=PING_TIMEOUT_S)
        else:
            client = docker.from_env(timeout=PING_TIMEOUT_S)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnreachable(
            f"cannot reach the Docker engine at {where} ({error_reason(exc)})", fix=ENGINE_FIX
        ) from None
    # Pings are quick; builds and long attaches are not.
    client.api.timeout = None
    return client


def engine_lost(exc: BaseException) -> EngineUnreachable | None:
    """The error to show when a Docker call failed because the engine, or the connection to it
    (a socket, SSH), went away mid-way; None for any other failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ConnectionError, EOFError, requests.exceptions.ConnectionError)) \
                or type(seen).__name__ in ("SSHException", "ChannelException"):
            return EngineUnreachable(
                f"lost the connection to the Docker engine ({error_reason(exc)})",
                fix="once it answers again, run the same command: it resumes where it stopped, "
                "and finished images are kept")
        seen = seen.__cause__ or seen.__context__
    return None


def has_nvidia_runtime(client: docker.DockerClient) -> bool:
    """Whether the engine can give containers an NVIDIA GPU (nvidia-container-runtime)."""
    runtimes = client.info().get("Runtimes") or {}
    return any("nvidia" in name.lower() for name in runtimes)


def context_endpoint(config_dir: Path | None = None) -> str | None:
    """The Docker host of the current docker context (DOCKER_CONTEXT or config.json's
    currentContext), or None for the default context."""
    config_dir = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    name = os.environ.get("DOCKER_CONTEXT") or _current_context(config_dir)
    if not name or name == "default":
        return None
    for meta_file in (config_dir / "contexts" / "meta").glob("*/meta.json"):
        try:
            meta = json.loads(meta_file.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("Name") == name:
            return (meta.get("Endpoints", {}).get("docker", {}).get("Host")) or None
    return None


def _current_context(config_dir: Path) -> str | None:
    try:
        config = json.loads((config_dir / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("currentContext") if isinstance(config, dict) else None


def error_reason(exc: BaseException) -> str:
    """The innermost OS error (what the socket said), else the exception's first line."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        for arg in getattr(seen, "args", ()):
            if isinstance(arg, OSError) and arg.strerror:
                return arg.strerror
            for inner in getattr(arg, "args", ()):
                if isinstance(inner, OSError) and inner.strerror:
                    return inner.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
