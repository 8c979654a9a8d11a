"""moto in server mode, over real HTTP, standing in for S3, IAM, EC2, STS and SSM. The server
(`moto_url`) and the ECR stand-in (`ecr_registry`) are tests/conftest.py's: one each for the
whole session, so that the fault matrix (tests/faults) shares them."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import moto
import pytest
from botocore.awsrequest import AWSResponse

DLAMI = "ami-0d1a0000000000001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amis_file(path: Path) -> Path:
    """moto's own AMIs plus a Deep Learning AMI owned by "amazon". (No creation_date: moto
    5.2 fails to reset an AMI that has one.)"""
    with gzip.open(Path(moto.__file__).parent / "ec2/resources/amis.json.gz") as f:
        amis = json.loads(f.read())
    amis.append({
        "ami_id": DLAMI, "state": "available", "public": True,
        "owner_id": "898082745236", "image_location": "amazon/dlami",
        "root_device_type": "ebs", "root_device_name": "/dev/sda1",
        "description": "test DLAMI", "image_type": "machine", "platform": None,
        "architecture": "x86_64", "virtualization_type": "hvm", "hypervisor": "xen",
        "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20250601",
    })
    path.write_text(json.dumps(amis))
    return path


def serve_moto(tmp_path_factory, extra_env: dict[str, str] | None = None):
    """Run moto_server on a free port until the generator is closed; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The moto installed beside this interpreter (the venv's pinned one), not whatever is on PATH.
    own = Path(sys.executable).with_name("moto_server")
    binary = str(own) if own.exists() else shutil.which("moto_server") or "moto_server"
    amis = amis_file(tmp_path_factory.mktemp("moto") / "amis.json")
    env = dict(os.environ, MOTO_AMIS_PATH=str(amis), **(extra_env or {}))
    log = open(tmp_path_factory.mktemp("moto-log") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(autouse=True)
def aws_env(moto_url, monkeypatch, tmp_path):
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    yield
    try:
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"moto reset failed: {exc.read()[-2000:]!r}") from None


@pytest.fixture
def aws():
    """boto3 clients on moto, for setting up and for checking what the code created."""
    session = boto3.Session(region_name="us-east-1")
    return {name: session.client(name) for name in ("s3", "ec2", "iam", "ssm", "sts")}


def write_safetensors(path: Path, payload: bytes = b"\0" * 64) -> Path:
    header = b'{"__metadata__":{}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    """A small checkpoint with a .yaml sidecar beside it."""
    folder = tmp_path / "models"
    folder.mkdir()
    checkpoint = write_safetensors(folder / "tiny.safetensors", os.urandom(1024))
    (folder / "tiny.yaml").write_text("model: {}\n")
    return checkpoint


def inject_error(client, operation: str, code: str, message: str, times: int = 1) -> list[int]:
    """Make the next `times` calls of `operation` fail with `code`; later calls reach moto.
    Returns a list whose length counts the calls seen."""
    calls: list[int] = []
    service = client.meta.service_model.service_id.hyphenize()

    def handler(**kwargs):
        calls.append(1)
        if len(calls) > times:
            return None
        response = AWSResponse("http://injected", 400, {}, None)
        return response, {"Error": {"Code": code, "Message": message},
                          "ResponseMetadata": {"HTTPStatusCode": 400}}

    client.meta.events.register(f"before-call.{service}.{operation}", handler)
    return calls
