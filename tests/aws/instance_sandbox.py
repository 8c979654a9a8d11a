"""The "instance" of the Option A end-to-end harness: this machine over SSH on 127.0.0.1, its
root under `host`, no GPU, the local Dockerfile, and s3fs 1.95 already built (as the bootstrap
leaves it), mounting moto with static test keys (moto has no metadata service; never the
caller's keys). The worker image goes to and comes from `registry` (conftest's ecr_registry),
in place of the account's ECR registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdtui.deploy.aws import s3fs

from .s3fs_builds import install_wrapper


def instance_sandbox(monkeypatch: pytest.MonkeyPatch, host: Path, port: int,
                     registry: str) -> None:
    monkeypatch.setenv("SDTUI_TEST_ECR_REGISTRY", registry)
    monkeypatch.setenv("SDTUI_INSTANCE_SSH", f"root@127.0.0.1:{port}")
    monkeypatch.setenv("SDTUI_TEST_HOST_PREFIX", str(host))
    monkeypatch.setenv("SDTUI_TEST_NO_GPU", "1")
    monkeypatch.setenv("SDTUI_TEST_DOCKERFILE", "Dockerfile.local")
    monkeypatch.setenv("SDTUI_TEST_S3FS_CREDENTIALS", "testing:testing")
    install_wrapper(host / s3fs.BINARY.lstrip("/"))
