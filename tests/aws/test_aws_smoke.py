"""scripts/aws-smoke.sh, the run a person with an AWS account does, run here as it is against
moto and the sshd stand-in for the instance (as test_end_to_end.py does): it provisions,
generates one image, prints each step's time and the cold-start total, tears everything down
(bucket included) and checks by tag that nothing is left. The image is the script's default
512x512 (on the tiny model, 2 steps on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sdtui.deploy.aws import s3fs
from sdtui.deploy.aws.naming import tag_filter
from sdtui.deploy.worker_container import LABEL

from .s3fs_builds import install_wrapper
from .sshd import FakeBoot, free_port

ROOT = Path(__file__).resolve().parents[2]
NAME = "smoke"
BUCKET = "sdtui-smoke-models"
SIZE = 512


@pytest.mark.docker
@pytest.mark.slow
def test_the_smoke_script_runs_option_a_and_leaves_nothing(worker_image, docker_client, aws,
                                                           tiny_models, tmp_path, monkeypatch):
    from conftest import OFFLINE_BASE

    host = tmp_path / "host"
    port = free_port()
    install_wrapper(host / s3fs.BINARY.lstrip("/"))
    env = {**os.environ, "SDTUI_PYTHON": sys.executable,
           "SDTUI_INSTANCE_SSH": f"root@127.0.0.1:{port}", "SDTUI_TEST_HOST_PREFIX": str(host),
           "SDTUI_TEST_NO_GPU": "1", "SDTUI_TEST_DOCKERFILE": "Dockerfile.local",
           "SDTUI_TEST_S3FS_CREDENTIALS": "testing:testing",
           "SDTUI_OUTPUTS_DIR": str(tmp_path / "outputs")}
    boot = FakeBoot(aws["ec2"], NAME, tmp_path / "sshd", port)
    boot.start()
    try:
        run = subprocess.run(
            ["scripts/aws-smoke.sh", "--model", str(tiny_models["ckpt"]), "--bucket", BUCKET,
             "--name", NAME, "--steps", "2", "--purge-bucket", "--",
             "--base-image", OFFLINE_BASE, "--ssh-cidr", "203.0.113.7/32"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert boot.error is None
        assert run.returncode == 0, run.stdout + run.stderr
        out = run.stdout
        print(out)
        for step in ("identity", "ami", "bucket", "upload", "iam", "access", "instance",
                     "bootstrap", "image", "container", "attach"):
            assert any(line.split()[:1] == [step] for line in out.splitlines()), out
        assert "cold start: " in out and f"{SIZE}x{SIZE}" in out
        assert f"nothing tagged sdtui:deployment={NAME} is left" in out

        # and moto agrees: nothing of the deployment is left, the bucket is gone
        ec2 = aws["ec2"]
        live = ec2.describe_instances(Filters=[tag_filter(NAME), {
            "Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
        assert live["Reservations"] == []
        assert BUCKET not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]
        assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}={NAME}"})
        kept = list((host / "var/lib/sdtui/outputs").glob("**/*.png"))
        assert len(kept) == 1
        with Image.open(kept[0]) as image:
            assert image.size == (SIZE, SIZE)
    finally:
        boot.stop.set()
        boot.join(5)
        for container in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL}={NAME}"}):
            container.remove(force=True)
        subprocess.run(["umount", "-l", str(host / "mnt/sd-data")], capture_output=True)
        if boot.sshd is not None:
            boot.sshd.stop()
