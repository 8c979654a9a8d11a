"""Build the worker image through the Docker SDK, streaming its log, reusing an existing image.

The tag carries a hash of the build context (see context.py), so an image with that tag is the
image this package would build: finding one means there is nothing to do.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors

from sdtui.container.context import build_context
from sdtui.errors import BuildFailed

OUTPUT_TAIL_LINES = 20
BASE_IMAGE_FIX = "pull it (docker pull IMAGE) or pass --base-image with an image this engine has"
# The classic builder colours a RUN step's stderr.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BUILD_FIX = "read the step's output above; fix the cause (network, base image) and run again"


def build_image(
    client: docker.DockerClient,
    *,
    dockerfile: str = "Dockerfile.local",
    base_image: str,
    on_log: Callable[[str], None],
    platform: str | None = None,
    ca_bundle: Path | None = None,
) -> str:
    """Build (or find) the worker image; returns its tag. Raises BuildFailed naming the step."""
    buildargs = _build_args(base_image)
    context = build_context(dockerfile, ca_bundle, base_image=base_image, build_args=buildargs,
                            platform=platform)
    if image_exists(client, context.tag):
        return context.tag
    try:
        stream = client.api.build(
            fileobj=context.fileobj(),
            custom_context=True,
            dockerfile=context.dockerfile,
            tag=context.tag,
            buildargs=buildargs,
            platform=platform,
            labels={"org.opencontainers.image.title": "sdtui worker",
                    "sdtui.base-image": base_image},
            decode=True,
            rm=True,
            forcerm=True,
            pull=False,
        )
        _follow(stream, on_log, base_image)
    except docker.errors.APIError as exc:
        raise BuildFailed(f"image build of {context.tag} was refused by the engine: "
                          f"{exc.explanation or exc}", fix=BUILD_FIX) from None
    if not image_exists(client, context.tag):
        raise BuildFailed(f"image build of {context.tag} ended without an image", fix=BUILD_FIX)
    return context.tag


def existing_image(
    client: docker.DockerClient,
    *,
    dockerfile: str = "Dockerfile.local",
    base_image: str,
    platform: str | None = None,
    ca_bundle: Path | None = None,
) -> str | None:
    """The tag build_image would return, if that image is already there; else None."""
    tag = planned_tag(dockerfile=dockerfile, base_image=base_image, platform=platform,
                      ca_bundle=ca_bundle)
    return tag if image_exists(client, tag) else None


def planned_tag(*, dockerfile: str, base_image: str, platform: str | None = None,
                ca_bundle: Path | None = None) -> str:
    """The tag build_image gives the image: `<repository>:<version>-<hash>`, the hash over the
    build context (the Dockerfiles, the worker's code, its locked requirements) and the recipe
    (base image, build arguments, platform)."""
    return build_context(dockerfile, ca_bundle, base_image=base_image,
                         build_args=_build_args(base_image), platform=platform).tag


def _build_args(base_image: str) -> dict[str, str]:
    return {"BASE_IMAGE": base_image}


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def base_image_source(client: docker.DockerClient, name: str) -> tuple[bool, str]:
    """Where a build would get its base image `name` from, asked before anything is created:
    (True, how) when it will be there (on this engine, or described by its registry), (False,
    why not for sure) when its registry would not describe it (a private image, say). A base
    image that is neither here nor reachable is BuildFailed, as the build would fail."""
    if image_exists(client, name):
        return True, f"{name} is on this engine"
    try:
        client.api.inspect_distribution(name)
    except docker.errors.APIError as exc:
        reason = (exc.explanation or str(exc)).strip().splitlines()[0]
        reason = reason.rsplit("dial tcp: ", 1)[-1][-160:]  # the lookup, not the URL tried
        if exc.status_code in (401, 403) or "unauthorized" in reason or "denied" in reason:
            return False, (f"{name} is not on this engine and its registry would not describe "
                           f"it ({reason}): a private image needs `docker login` first")
        raise BuildFailed(f"base image {name!r} is not on this engine and cannot be pulled "
                          f"({reason})", fix=f"pull it (`docker pull {name}`), or pass "
                          "--base-image NAME for an image this engine has") from None
    return True, f"{name} is pulled from its registry by the first build"


def _follow(stream: Iterable[Mapping[str, Any]], on_log: Callable[[str], None],
            base_image: str) -> None:
    """Relay the build log line by line; on an error, raise BuildFailed with the step's tail."""
    step = "before the first step"
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            error = (chunk.get("error") or detail.get("message") or "unknown error").strip()
            raise _failure(step, error, list(tail), base_image)
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in text.splitlines():
            line = _ANSI.sub("", line).rstrip()
            if not line:
                continue
            on_log(line)
            if line.startswith("Step ") and " : " in line:
                step = line
                tail.clear()
            else:
                tail.append(line)


def _failure(step: str, error: str, tail: list[str], base_image: str) -> BuildFailed:
    instruction = step.split(" : ", 1)[-1]
    if instruction.upper().startswith("FROM"):
        return BuildFailed(
            f"image build failed at {step}: base image {base_image!r} is not available "
            f"locally and could not be pulled ({error})",
            fix=BASE_IMAGE_FIX,
        )
    output = "\n".join(f"  | {line}" for line in tail)
    message = f"image build failed at {step}: {error}"
    if output:
        message += f"\nlast {len(tail)} lines of its output:\n{output}"
    return BuildFailed(message, fix=BUILD_FIX)

