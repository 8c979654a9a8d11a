"""The private ECR repository the shards pull the worker image from, and the push: the Docker
SDK, authenticated with the token from ecr:GetAuthorizationToken (never the docker CLI, and no
credential written to disk)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import urlparse

import docker
import docker.errors
from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import error_code
from sdtui.deploy.batch import names
from sdtui.errors import DeploymentError


def repository_params(name: str) -> dict:
    return {"repositoryName": names.repository(name), "imageTagMutability": "IMMUTABLE",
            "imageScanningConfiguration": {"scanOnPush": True},
            "encryptionConfiguration": {"encryptionType": "AES256"},
            "tags": [{"Key": k, "Value": v} for k, v in names.tag_dict(name).items()]}


def describe(ecr, name: str) -> dict | None:
    try:
        found = ecr.describe_repositories(
            repositoryNames=[names.repository(name)])["repositories"][0]
    except ClientError as exc:
        if error_code(exc) == "RepositoryNotFoundException":
            return None
        raise
    tags = ecr.list_tags_for_resource(resourceArn=found["repositoryArn"]).get("tags", [])
    names.check_ours("ECR repository", found["repositoryName"],
                     {t["Key"]: t["Value"] for t in tags}, name)
    return found


def ensure_repository(ecr, name: str) -> str:
    """Our repository; returns its URI (registry/name)."""
    found = describe(ecr, name)
    if found is None:
        found = ecr.create_repository(**repository_params(name))["repository"]
    return found["repositoryUri"]


def has_image(ecr, name: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=names.repository(name), imageIds=[{"imageTag": tag}])
    except ClientError as exc:
        if error_code(exc) == "ImageNotFoundException":
            return False
        raise
    return True


def registry_auth(ecr) -> tuple[str, dict[str, str]]:
    """(registry host, Docker auth config) from a fresh authorization token (valid 12 h)."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = urlparse(data["proxyEndpoint"]).netloc or data["proxyEndpoint"]
    return registry, {"username": user, "password": password, "serveraddress": registry}


def push(engine: docker.DockerClient, ecr, local_image: str, repository_uri: str, tag: str,
         on_log: Callable[[str], None] = lambda line: None) -> str:
    """Tag the local image as repository_uri:tag and push it; returns that reference."""
    registry, auth = registry_auth(ecr)
    if repository_uri.split("/", 1)[0] != registry:
        raise DeploymentError(f"repository {repository_uri} is not in the registry the token "
                              f"is for ({registry})", fix="check --region and --profile")
    try:
        engine.images.get(local_image).tag(repository_uri, tag)
        stream = engine.api.push(repository_uri, tag=tag, auth_config=auth, stream=True,
                                 decode=True)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail") or {}
                raise DeploymentError(
                    f"pushing {repository_uri}:{tag} failed: "
                    f"{(chunk.get('error') or detail.get('message') or '').strip()}",
                    fix="check the network and that your credentials may push to ECR")
            if chunk.get("status") in {"Pushed", "Layer already exists"} or "aux" in chunk:
                on_log(f"{chunk.get('id', tag)}: {chunk.get('status', 'pushed')}")
    except docker.errors.DockerException as exc:
        raise DeploymentError(f"pushing {repository_uri}:{tag} failed: {exc}",
                              fix="check that the Docker engine is running") from None
    return f"{repository_uri}:{tag}"


def delete_repository(ecr, name: str) -> bool:
    """With its images (all of them ours: the repository is)."""
    if describe(ecr, name) is None:
        return False
    ecr.delete_repository(repositoryName=names.repository(name), force=True)
    return True
