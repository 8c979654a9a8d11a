"""The deployment's private ECR repository and the worker image in it, for Option A (the
instance's engine pulls it, or builds it and pushes it) and the scale-out (pushed from this
machine). Pushes and pulls go through the Docker SDK, authenticated per request with the token
the client gets from ecr:GetAuthorizationToken with the caller's credentials: never the docker
CLI, no `docker login`, no credential written on either machine, and no ECR permission for the
instance role.

`SDTUI_TEST_ECR_REGISTRY=HOST:PORT` (tests only) puts a local registry in place of the account's
registry host; the repository path and the token still come from the ECR API."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from urllib.parse import urlparse

import docker
import docker.errors
from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import check_ours, error_code, repository_name, tag_dict
from sdtui.errors import DeploymentError

TEST_REGISTRY = "SDTUI_TEST_ECR_REGISTRY"
USD_PER_GB_MONTH = 0.10
PUSH_FIX = "check the network and that your credentials may push to and pull from ECR"


def repository_params(name: str) -> dict:
    return {"repositoryName": repository_name(name), "imageTagMutability": "IMMUTABLE",
            "imageScanningConfiguration": {"scanOnPush": True},
            "encryptionConfiguration": {"encryptionType": "AES256"},
            "tags": [{"Key": k, "Value": v} for k, v in tag_dict(name).items()]}


def describe(ecr, name: str) -> dict | None:
    try:
        found = ecr.describe_repositories(
            repositoryNames=[repository_name(name)])["repositories"][0]
    except ClientError as exc:
        if error_code(exc) == "RepositoryNotFoundException":
            return None
        raise
    tags = ecr.list_tags_for_resource(resourceArn=found["repositoryArn"]).get("tags", [])
    check_ours("ECR repository", found["repositoryName"], {t["Key"]: t["Value"] for t in tags},
               name)
    return found


def _registry(found: str) -> str:
    return os.environ.get(TEST_REGISTRY) or found


def repository_uri(found: dict) -> str:
    registry, _, path = found["repositoryUri"].partition("/")
    return f"{_registry(registry)}/{path}"


def ensure_repository(ecr, name: str, on_create: Callable[[], None] = lambda: None) -> str:
    """Our repository; returns its URI (registry/name). `on_create` runs just before it is
    created (the ledger records it first, so a crash right after loses nothing)."""
    found = describe(ecr, name)
    if found is None:
        on_create()
        found = ecr.create_repository(**repository_params(name))["repository"]
    return repository_uri(found)


def has_image(ecr, name: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository_name(name), imageIds=[{"imageTag": tag}])
    except ClientError as exc:
        if error_code(exc) == "ImageNotFoundException":
            return False
        raise
    return True


def registry_auth(ecr) -> tuple[str, dict[str, str]]:
    """(registry host, Docker auth config) from a fresh authorization token (valid 12 h)."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = _registry(urlparse(data["proxyEndpoint"]).netloc or data["proxyEndpoint"])
    return registry, {"username": user, "password": password, "serveraddress": registry}


def _auth_for(ecr, repository: str) -> dict[str, str]:
    registry, auth = registry_auth(ecr)
    if repository.split("/", 1)[0] != registry:
        raise DeploymentError(f"repository {repository} is not in the registry the token "
                              f"is for ({registry})", fix="check --region and --profile")
    return auth


def _stream_error(chunk: dict) -> str | None:
    if "error" in chunk or "errorDetail" in chunk:
        detail = chunk.get("errorDetail") or {}
        return (chunk.get("error") or detail.get("message") or "").strip()
    return None


def push(engine: docker.DockerClient, ecr, local_image: str, repository_uri: str, tag: str,
         on_log: Callable[[str], None] = lambda line: None) -> str:
    """Tag the local image as repository_uri:tag and push it; returns that reference."""
    auth = _auth_for(ecr, repository_uri)
    try:
        engine.images.get(local_image).tag(repository_uri, tag)
        stream = engine.api.push(repository_uri, tag=tag, auth_config=auth, stream=True,
                                 decode=True)
        for chunk in stream:
            if (error := _stream_error(chunk)) is not None:
                raise DeploymentError(f"pushing {repository_uri}:{tag} failed: {error}",
                                      fix=PUSH_FIX)
            if chunk.get("status") in {"Pushed", "Layer already exists"} or "aux" in chunk:
                on_log(f"{chunk.get('id', tag)}: {chunk.get('status', 'pushed')}")
    except docker.errors.DockerException as exc:
        raise DeploymentError(f"pushing {repository_uri}:{tag} failed: {exc}",
                              fix="check that the Docker engine is running") from None
    return f"{repository_uri}:{tag}"


# What a registry says of a tag or repository it does not hold (ECR and Distribution), when
# the engine reports it in the stream rather than as a 404.
_ABSENT = ("manifest unknown", "name unknown", "does not exist")


def pull(engine: docker.DockerClient, ecr, repository_uri: str, tag: str,
         on_log: Callable[[str], None] = lambda line: None) -> str | None:
    """Pull repository_uri:tag into the engine; returns the image id, or None when the
    registry does not hold that tag. Any other failure is a DeploymentError."""
    auth = _auth_for(ecr, repository_uri)
    reference = f"{repository_uri}:{tag}"
    try:
        stream = engine.api.pull(repository_uri, tag=tag, auth_config=auth, stream=True,
                                 decode=True)
        for chunk in stream:
            if (error := _stream_error(chunk)) is not None:
                if any(word in error.lower() for word in _ABSENT):
                    return None
                raise DeploymentError(f"pulling {reference} failed: {error}", fix=PUSH_FIX)
            if chunk.get("status") in {"Pull complete", "Already exists"}:
                on_log(f"{chunk.get('id', tag)}: {chunk['status']}")
        return engine.images.get(reference).id
    except docker.errors.NotFound:  # the engine's answer for a tag the registry lacks
        return None
    except docker.errors.DockerException as exc:
        raise DeploymentError(f"pulling {reference} failed: {exc}", fix=PUSH_FIX) from None


def delete_repository(ecr, name: str) -> bool:
    """With its images (all of them ours: the repository is)."""
    if describe(ecr, name) is None:
        return False
    ecr.delete_repository(repositoryName=repository_name(name), force=True)
    return True
