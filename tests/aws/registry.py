"""Debian's docker-registry (the Distribution registry, what ECR's registry speaks) on a free
loopback port with basic auth, standing in for the account's ECR registry. The Docker engine
treats a loopback registry as insecure-allowed, so plain HTTP works there and nowhere else.

MOTO_USER/MOTO_PASSWORD are what moto's GetAuthorizationToken hands out (base64 "AWS:<account
id>-auth-token"), so a registry with them takes the token the product gets from moto over HTTP."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest

MOTO_USER, MOTO_PASSWORD = "AWS", "123456789012-auth-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


@contextmanager
def serve_registry(root: Path, user: str, password: str) -> Iterator[str]:
    """The registry with its own config, storage and htpasswd; yields its HOST:PORT."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed (scripts/setup-test-env.sh installs it)")
    (root / "htpasswd").write_bytes(
        user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)) + b"\n")
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {uuid.uuid4().hex}\n"
        f"auth:\n  htpasswd:\n    realm: sdtui-test\n    path: {root / 'htpasswd'}\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while http_status(f"{url}/v2/") != 401:  # up, and refusing the anonymous
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {root / 'registry.log'}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def remove_tags(docker_client, *references: str) -> None:
    """Take the tags of these references (a repository names all its tags) off the engine: tags
    this test made (the push tags the image with the registry's name). An image another tag
    still names stays; only a test's own image goes."""
    for reference in references:
        for image in docker_client.images.list(name=reference):
            for tag in image.tags:
                if tag == reference or tag.startswith(f"{reference}:"):
                    docker_client.images.remove(tag)
