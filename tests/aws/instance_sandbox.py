"""The "instance" of the Option A end-to-end harness: this machine over SSH on 127.0.0.1, its
root under `host`, no GPU, the local Dockerfile, and s3fs 1.95 already built (as the bootstrap
leaves it), mounting moto with static test keys (moto has no metadata service; never the
caller's keys). The worker image goes to and comes from `registry` (conftest's ecr_registry),
in place of the account's ECR registry."""

from __future__ import annotations

import subprocess
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


def clean_up_instance(docker_client, boot, mount: Path, registry: str, name: str) -> None:
    """What an end-to-end test leaves whatever happened: the "instance" (sshd), the containers
    of deployment `name` on the engine, the s3fs mount and the image tags pushed to `registry`.
    """
    from sdtui.deploy.worker_container import LABEL

    from .registry import remove_tags

    boot.stop.set()
    boot.join(5)
    for container in docker_client.containers.list(all=True,
                                                   filters={"label": f"{LABEL}={name}"}):
        container.remove(force=True)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    if boot.sshd is not None:
        boot.sshd.stop()
    remove_tags(docker_client, f"{registry}/sdtui-{name}")


def boot_instance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ec2, registry: str,
                  name: str):  # -> (host root, s3fs mount point, sshd.FakeBoot, started)
    """The sandboxed "instance" of deployment `name`, booted as soon as moto runs it."""
    from .sshd import FakeBoot, free_port

    host = tmp_path / "host"
    port = free_port()
    instance_sandbox(monkeypatch, host, port, registry)
    boot = FakeBoot(ec2, name, tmp_path / "sshd", port)
    boot.start()
    return host, host / "mnt/sd-data", boot


def stop_instance(ec2, docker_client, boot, mount: Path, name: str):  # -> sshd.FakeBoot
    """The "instance" of deployment `name` stopped, as its idle auto-stop stops it: the host
    shuts down (the worker container stops, the s3fs mount and every SSH session go) and EC2
    shows it stopped. Returns the FakeBoot that boots it again once something starts it."""
    from sdtui.deploy.aws.naming import tag_filter
    from sdtui.deploy.worker_container import LABEL

    from .sshd import FakeBoot

    for container in docker_client.containers.list(filters={"label": f"{LABEL}={name}"}):
        container.stop(timeout=30)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    boot.sshd.drop_sessions()
    boot.sshd.stop()
    (reservation,) = ec2.describe_instances(Filters=[tag_filter(name), {
        "Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    ec2.stop_instances(InstanceIds=[reservation["Instances"][0]["InstanceId"]])
    again = FakeBoot(ec2, name, boot.folder, boot.port)
    again.start()
    return again


def assert_nothing_left(aws, docker_client, name: str, bucket: str) -> None:
    """After `--teardown --purge-bucket`: nothing tagged for deployment `name` in moto (the
    instance, its security group, key pair and role), no bucket, no ECR repository, and no
    container of the deployment on the engine."""
    import boto3

    from sdtui.deploy.aws.naming import tag_filter
    from sdtui.deploy.worker_container import LABEL

    ec2 = aws["ec2"]
    live = ec2.describe_instances(Filters=[tag_filter(name), {
        "Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
    assert live["Reservations"] == []
    assert ec2.describe_security_groups(Filters=[tag_filter(name)])["SecurityGroups"] == []
    assert ec2.describe_key_pairs(Filters=[tag_filter(name)])["KeyPairs"] == []
    assert not any(r["RoleName"].startswith(f"sdtui-{name}")
                   for r in aws["iam"].list_roles()["Roles"])
    assert bucket not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]
    assert boto3.client("ecr").describe_repositories()["repositories"] == []
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})
