"""Option A's worker image on the instance: pulled from the deployment's ECR repository when the
repository holds this package's image, else built on the instance and pushed there, so that the
next instance (a relaunch, or a new one after a teardown that kept the bucket) pulls it instead
of building it again.

The key is the image's tag, `<version>-<hash>`, whose hash covers the build context (the
Dockerfile, the worker's code, requirements-worker.lock) and the base image: a changed lock or
Dockerfile is another tag, which the repository does not hold yet, so it is built and pushed.
The instance's engine pulls and pushes (driven over SSH) with a token the client gets with the
caller's credentials: the instance role has no ECR permission at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import docker

from sdtui.container.build import build_image, image_exists, planned_tag
from sdtui.deploy.aws import ecr
from sdtui.deploy.aws.naming import repository_name
from sdtui.ledger import Ledger

PUSHED = "pushed_image"  # ledger param: the repository reference this deployment's image is at


@dataclass(frozen=True)
class WorkerImage:
    tag: str  # the local tag the worker container runs
    reference: str  # repository_uri:tag in ECR
    how: str  # what this run did, for the step's line


def ensure_repository(ecr_client, name: str, ledger: Ledger) -> str:
    """The deployment's repository, recorded in the ledger (as created when sdtui creates it,
    before creating it); returns its URI."""
    repository = repository_name(name)
    entry = next((e for e in ledger.resources("ecr_repository") if e.id == repository), None)
    created = bool(entry and entry.meta.get("created"))

    def record_creation() -> None:
        nonlocal created
        created = True
        ledger.record("ecr_repository", repository, created=True)

    uri = ecr.ensure_repository(ecr_client, name, on_create=record_creation)
    ledger.record("ecr_repository", repository, uri=uri, created=created)
    return uri


def ready(engine: docker.DockerClient, ledger: Ledger, *, dockerfile: str,
          base_image: str) -> str | None:
    """The local tag when the instance already has this package's image and it is in ECR."""
    tag = planned_tag(dockerfile=dockerfile, base_image=base_image)
    pushed = str(ledger.params.get(PUSHED, ""))
    if pushed.rsplit(":", 1)[-1] == tag.rsplit(":", 1)[1] and image_exists(engine, tag):
        return tag
    return None


def ensure_worker_image(engine: docker.DockerClient, ecr_client, name: str, ledger: Ledger, *,
                        dockerfile: str, base_image: str,
                        on_log: Callable[[str], None] = lambda line: None) -> WorkerImage:
    tag = planned_tag(dockerfile=dockerfile, base_image=base_image)
    uri = ensure_repository(ecr_client, name, ledger)
    version = tag.rsplit(":", 1)[1]
    reference = f"{uri}:{version}"
    if image_exists(engine, tag):
        how, in_registry = "already on the instance", False
    elif ecr.pull(engine, ecr_client, uri, version, on_log) is not None:
        engine.images.get(reference).tag(*tag.rsplit(":", 1))
        how, in_registry = "pulled from ECR", True
    else:
        on_log(f"{reference} is not in ECR yet: building it on the instance")
        build_image(engine, dockerfile=dockerfile, base_image=base_image, on_log=on_log)
        how, in_registry = "built on the instance", False
    if not in_registry and ledger.params.get(PUSHED) != reference:
        if ecr.has_image(ecr_client, name, version):
            how += "; already in ECR"
        else:
            ecr.push(engine, ecr_client, tag, uri, version, on_log=on_log)
            how += "; pushed to ECR for the next launch"
    ledger.set_params(**{PUSHED: reference})
    return WorkerImage(tag, reference, how)
