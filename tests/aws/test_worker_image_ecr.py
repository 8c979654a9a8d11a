"""Option A's worker image in ECR: the first launch builds it on the instance and pushes it, a
relaunch (a new instance) pulls it and builds nothing, a changed build (another context hash)
builds and pushes again; teardown keeps the repository with the bucket.

Real parts: the "instance" engine is this machine's, driven by the Docker SDK over ssh:// through
an sshd on 127.0.0.1 with the deployment's pinned host key (as production drives the instance);
the ECR API is moto over HTTP, whose GetAuthorizationToken hands out the token; the registry is
Debian's docker-registry on 127.0.0.1 taking that token (tests/aws/registry.py), in place of the
account's ECR registry (SDTUI_TEST_ECR_REGISTRY). The image is the real worker image from
Dockerfile.local, built on a base tag of our own, so its tag is ours alone to remove."""

from __future__ import annotations

import shutil
import uuid
from contextlib import closing, suppress
from importlib.resources import files
from pathlib import Path

import boto3
import docker.errors
import pytest

from sdtui.container import context
from sdtui.container.build import planned_tag
from sdtui.deploy.aws import bucket, ecr, image, ssh
from sdtui.deploy.aws.access import write_private_key
from sdtui.deploy.aws.docker_ssh import docker_over_ssh
from sdtui.deploy.aws.naming import repository_name
from sdtui.deploy.aws.session import make_session
from sdtui.deploy.aws.teardown import teardown
from sdtui.errors import DeploymentError
from sdtui.ledger import Ledger

from .registry import MOTO_PASSWORD, MOTO_USER, http_status, remove_tags
from .sshd import Sshd, free_port, public_key_of

DOCKERFILE = "Dockerfile.local"


@pytest.fixture
def instance_engine(tmp_path):
    """Connects to the instance's engine as the deployment does: Docker over SSH, with the
    pinned host key (one connection per step, closed after it); and the sshd."""
    name = f"ecr-{uuid.uuid4().hex[:6]}"
    user_key = tmp_path / "id"
    write_private_key(user_key)
    host_key, _ = ssh.ensure_host_key(name)
    port = free_port()
    target = ssh.SshTarget("root", "127.0.0.1", port)
    known_hosts = ssh.pin_host_key(name, target)
    sshd = Sshd(tmp_path / "sshd", port, host_key, public_key_of(user_key))
    try:
        yield name, lambda: closing(docker_over_ssh(target, user_key, known_hosts)), sshd
    finally:
        sshd.stop()


@pytest.fixture
def own_tags(docker_client, worker_image):
    """Base image tags of our own (the offline base under a new name), so that every worker
    tag built on them is ours; the tags made here and their worker images are removed after."""
    from conftest import OFFLINE_BASE

    made: list[str] = []

    def new_base() -> str:
        tag = f"sdtui-ecr-test-base:{uuid.uuid4().hex[:10]}"
        docker_client.images.get(OFFLINE_BASE).tag(tag)
        made.append(tag)
        return tag

    yield new_base, made
    for base in made:
        worker = planned_tag(dockerfile=DOCKERFILE, base_image=base)
        with suppress(docker.errors.ImageNotFound):  # with its registry tags: ours alone
            remove_tags(docker_client, *docker_client.images.get(worker).tags)
        remove_tags(docker_client, base)


@pytest.mark.docker
def test_a_relaunch_pulls_the_pushed_image_and_a_changed_build_pushes_again(
        docker_client, instance_engine, own_tags, ecr_registry, monkeypatch):
    monkeypatch.setenv(ecr.TEST_REGISTRY, ecr_registry)
    name, connect, _ = instance_engine
    new_base, _ = own_tags
    base = new_base()
    ecr_client = boto3.client("ecr")  # moto over HTTP
    ledger = Ledger.open(name, "aws")
    logs: list[str] = []

    def launch(base_image: str) -> image.WorkerImage:
        with connect() as engine:
            return image.ensure_worker_image(engine, ecr_client, name, ledger,
                                             dockerfile=DOCKERFILE, base_image=base_image,
                                             on_log=logs.append)

    def ready(base_image: str) -> str | None:
        with connect() as engine:
            return image.ready(engine, ledger, dockerfile=DOCKERFILE, base_image=base_image)

    # first launch: not in ECR, so built on the instance, then pushed
    first = launch(base)
    assert first.how == "built on the instance; pushed to ECR for the next launch"
    repository, version = first.reference.rsplit(":", 1)
    assert repository == f"{ecr_registry}/{repository_name(name)}"
    assert first.tag == planned_tag(dockerfile=DOCKERFILE, base_image=base)
    assert first.tag.endswith(f":{version}")
    path = f"http://{ecr_registry}/v2/{repository_name(name)}/manifests/{version}"
    assert http_status(path, MOTO_USER, MOTO_PASSWORD) == 200
    assert http_status(path) == 401  # the registry wants the token
    built_id = docker_client.images.get(first.tag).id
    # the same launch again on the same instance: nothing to do
    assert ready(base) == first.tag

    # a relaunch on a new instance: its engine has neither the image nor the base it is built
    # from, so a build could not even start; the image comes from ECR
    remove_tags(docker_client, first.tag, first.reference, base)
    assert ready(base) is None
    logs.clear()
    again = launch(base)
    assert again.how == "pulled from ECR"
    assert again.tag == first.tag and again.reference == first.reference
    pulled = docker_client.images.get(again.tag)
    assert pulled.id == built_id  # the very image the first launch built
    assert any(d.startswith(f"{repository}@sha256:") for d in pulled.attrs["RepoDigests"])
    assert not any(line.startswith("Step ") for line in logs)  # no build step ran

    # another build recipe (as a changed lock or Dockerfile gives): built and pushed again
    changed = launch(new_base())
    assert changed.how == "built on the instance; pushed to ECR for the next launch"
    assert changed.reference != first.reference
    assert changed.reference.rsplit(":", 1)[0] == repository


def _package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "sdtui"
    shutil.copytree(Path(str(files("sdtui"))), copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize("changed", ["container/requirements-worker.lock",
                                     "container/Dockerfile", "container/Dockerfile.local"])
def test_the_image_tag_changes_with_the_lock_and_the_dockerfiles(changed, tmp_path, monkeypatch):
    before = {d: planned_tag(dockerfile=d, base_image="python:3.11-slim")
              for d in context.DOCKERFILES}
    package = _package_copy(tmp_path)
    with open(package / changed, "a") as f:
        f.write("\n# changed\n")
    monkeypatch.setattr(context, "_package_root", lambda: package)
    after = {d: planned_tag(dockerfile=d, base_image="python:3.11-slim")
             for d in context.DOCKERFILES}
    assert all(before[d] != after[d] for d in context.DOCKERFILES)


def test_a_pull_refused_by_the_registry_is_one_error(instance_engine, ecr_registry, monkeypatch):
    """A registry that refuses the token (not a missing image) is a DeploymentError, not a
    build: a wrong token must never look like an empty repository."""
    monkeypatch.setenv(ecr.TEST_REGISTRY, ecr_registry)
    name, connect, _ = instance_engine
    ecr_client = boto3.client("ecr")
    uri = ecr.ensure_repository(ecr_client, name)
    monkeypatch.setattr(ecr, "registry_auth", lambda client: (ecr_registry, {
        "username": MOTO_USER, "password": "not-the-token", "serveraddress": ecr_registry}))
    with connect() as engine, pytest.raises(DeploymentError,
                                            match="pulling .* failed: .*unauthorized"):
        ecr.pull(engine, ecr_client, uri, "0.1.0-000000000000")


def test_teardown_keeps_the_repository_with_the_bucket_and_purges_only_its_own(tmp_path):
    ecr_client = boto3.client("ecr")
    session = make_session(None, "us-east-1")

    ours = Ledger.open("ecr-ours", "aws")
    s3 = boto3.client("s3")
    bucket.ensure_bucket(s3, "sdtui-ecr-ours-models", "us-east-1", "ecr-ours", "123456789012",
                         ours=True)
    ours.record("bucket", "sdtui-ecr-ours-models", created=True)
    image.ensure_repository(ecr_client, "ecr-ours", ours)
    assert ours.resources("ecr_repository")[0].meta["created"] is True
    kept = teardown(session, "ecr-ours", ours)
    assert [(r.kind, r.id) for r in kept.kept] == [("bucket", "sdtui-ecr-ours-models"),
                                                   ("ecr_repository", "sdtui-ecr-ours")]
    assert "next launch pulls" in kept.kept[1].note
    assert Ledger.load("ecr-ours") is not None  # it still remembers creating the repository
    purged = teardown(session, "ecr-ours", Ledger.load("ecr-ours"), purge_bucket=True)
    assert [(r.kind, r.id) for r in purged.removed] == [("bucket", "sdtui-ecr-ours-models"),
                                                        ("ecr_repository", "sdtui-ecr-ours")]
    assert ecr.describe(ecr_client, "ecr-ours") is None
    assert Ledger.load("ecr-ours") is None

    # tagged for the deployment but made elsewhere (this ledger did not create it): kept
    ecr_client.create_repository(**ecr.repository_params("ecr-theirs"))
    theirs = Ledger.open("ecr-theirs", "aws")
    image.ensure_repository(ecr_client, "ecr-theirs", theirs)
    assert theirs.resources("ecr_repository")[0].meta["created"] is False
    report = teardown(session, "ecr-theirs", theirs, purge_bucket=True)
    assert report.removed == [] and report.kept[0].id == "sdtui-ecr-theirs"
    assert ecr.describe(ecr_client, "ecr-theirs") is not None

    # beside a bucket of yours (never deleted, and --purge-bucket refused on it) nothing would
    # ever delete the repository later: it goes with the teardown
    s3.create_bucket(Bucket="users-own-models-ecr")
    yours = Ledger.open("ecr-yours", "aws")
    yours.record("bucket", "users-own-models-ecr", created=False)
    image.ensure_repository(ecr_client, "ecr-yours", yours)
    report = teardown(session, "ecr-yours", yours)
    assert [(r.kind, r.id) for r in report.removed] == [("ecr_repository", "sdtui-ecr-yours")]
    assert [r.id for r in report.kept] == ["users-own-models-ecr"]
    assert Ledger.load("ecr-yours") is None
