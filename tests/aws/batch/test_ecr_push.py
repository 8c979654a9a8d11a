"""The ECR push against a real registry: Debian's docker-registry (the Distribution registry)
on 127.0.0.1 with basic auth (tests/aws/registry.py), reached by this machine's Docker engine
through the Docker SDK exactly as the product pushes to ECR. Only the token exchange is faked, at
the GetAuthorizationToken call (botocore's Stubber), with the answer's real shape: a base64
"AWS:<password>" token and the registry's endpoint."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber

from sdtui.deploy.aws import ecr
from sdtui.errors import DeploymentError

from ..registry import http_status, serve_registry

USER, PASSWORD = "AWS", f"token-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with serve_registry(tmp_path_factory.mktemp("registry"), USER, PASSWORD) as address:
        yield address


def _get(url: str, password: str | None) -> int:
    return http_status(url, USER, password)


@pytest.fixture
def tiny_image(docker_client):
    """A one-file image of our own (no base image needed), removed afterwards."""
    name = f"sdtui-push-test-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = uuid.uuid4().bytes
        info = tarfile.TarInfo("hello.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    image_id = json.loads(docker_client.api.import_image_from_data(
        buffer.getvalue(), repository=name, tag="v1"))["status"]
    yield f"{name}:v1"
    for tag in docker_client.images.get(image_id).tags:  # the pushed tags too
        docker_client.images.remove(tag)


def ecr_with_token(registry: str, password: str):
    """A real ECR client whose GetAuthorizationToken answers for the local registry."""
    client = boto3.client("ecr")
    stub = Stubber(client)
    stub.add_response("get_authorization_token", {"authorizationData": [{
        "authorizationToken": base64.b64encode(f"{USER}:{password}".encode()).decode(),
        "expiresAt": datetime.now(UTC) + timedelta(hours=12),
        "proxyEndpoint": f"http://{registry}",
    }]}, {})
    stub.activate()
    return client, stub


@pytest.mark.docker
def test_push_with_the_token_lands_in_the_registry(docker_client, registry, tiny_image):
    repository = f"{registry}/sdtui-{uuid.uuid4().hex[:6]}"
    client, stub = ecr_with_token(registry, PASSWORD)
    logged: list[str] = []
    ref = ecr.push(docker_client, client, tiny_image, repository, "0.1.0-abc", logged.append)
    stub.assert_no_pending_responses()
    assert ref == f"{repository}:0.1.0-abc"
    path = repository.split("/", 1)[1]
    assert _get(f"http://{registry}/v2/{path}/manifests/0.1.0-abc", PASSWORD) == 200
    assert _get(f"http://{registry}/v2/{path}/manifests/0.1.0-abc", None) == 401
    assert logged  # the push reported its layers


@pytest.mark.docker
def test_a_wrong_token_is_refused_by_the_registry(docker_client, registry, tiny_image):
    repository = f"{registry}/sdtui-{uuid.uuid4().hex[:6]}"
    client, _stub = ecr_with_token(registry, "not-the-password")
    with pytest.raises(DeploymentError, match="unauthorized"):
        ecr.push(docker_client, client, tiny_image, repository, "v1")


@pytest.mark.docker
def test_a_repository_in_another_registry_is_not_pushed(docker_client, registry, tiny_image):
    client, _stub = ecr_with_token(registry, PASSWORD)
    with pytest.raises(DeploymentError, match="not in the registry the token is for"):
        ecr.push(docker_client, client, tiny_image,
                 "123456789012.dkr.ecr.us-east-1.amazonaws.com/sdtui-batch", "v1")
