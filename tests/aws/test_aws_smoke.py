"""scripts/aws-smoke.sh, the run a person with an AWS account does, run here as it is against
moto and the sshd stand-in for the instance: it provisions, generates one image, prints each
step's time and the cold-start total, tears everything down (bucket included) and checks by tag
that nothing is left. The image is 64x64 through the script's --size (tiny model, 2 steps on
CPU): its default 512x512 costs the tiny model's VAE seconds per launch on two CPU cores.

Unlike test_end_to_end.py, the "instance" gets no static keys: the whole run sits in a network
namespace with an IMDSv2-only metadata stand-in at 169.254.169.254 (netns_smoke.py), so s3fs
1.95 mounts the bucket with the instance role, as on AWS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sdtui.container.build import planned_tag
from sdtui.deploy.aws import s3fs
from sdtui.deploy.aws.naming import repository_name
from sdtui.deploy.worker_container import LABEL

from .conftest import amis_file
from .registry import remove_tags
from .s3fs_builds import install_wrapper, require
from .sshd import free_port

ROOT = Path(__file__).resolve().parents[2]
NAME = "smoke"
BUCKET = "sdtui-smoke-models"
SIZE = 64


@pytest.mark.docker
@pytest.mark.slow
def test_the_smoke_script_runs_option_a_and_leaves_nothing(worker_image, docker_client,
                                                           tiny_models, tmp_path, ecr_registry):
    from conftest import OFFLINE_BASE

    require(os.geteuid() == 0 and shutil.which("unshare") is not None,
            "needs root and unshare for a network namespace")
    host = tmp_path / "host"
    install_wrapper(host / s3fs.BINARY.lstrip("/"))
    # a base tag of our own, so the worker image built on it is ours to take off the "instance"
    base = f"sdtui-smoke-base:{uuid.uuid4().hex[:10]}"
    docker_client.images.get(OFFLINE_BASE).tag(base)
    worker = planned_tag(dockerfile="Dockerfile.local", base_image=base)
    repository = f"{ecr_registry}/{repository_name(NAME)}"
    config = {
        "work": str(tmp_path), "name": NAME, "port": free_port(), "cwd": str(ROOT),
        "amis": str(amis_file(tmp_path / "amis.json")), "timeout": 1200,
        "mount_point": str(host / "mnt/sd-data"),
        "command": ["scripts/aws-smoke.sh", "--model", str(tiny_models["ckpt"]), "--bucket",
                    BUCKET, "--name", NAME, "--steps", "2", "--size", str(SIZE), "--relaunch",
                    "--purge-bucket", "--",
                    "--base-image", base, "--ssh-cidr", "203.0.113.7/32"],
        "instance_images": [worker, repository],
        "env": {"SDTUI_PYTHON": sys.executable, "SDTUI_TEST_HOST_PREFIX": str(host),
                "SDTUI_INSTANCE_SSH": "", "SDTUI_TEST_NO_GPU": "1",
                "SDTUI_TEST_DOCKERFILE": "Dockerfile.local",
                "SDTUI_OUTPUTS_DIR": str(tmp_path / "outputs"),
                "SDTUI_TEST_ECR_REGISTRY": ecr_registry},
    }
    config["env"]["SDTUI_INSTANCE_SSH"] = f"root@127.0.0.1:{config['port']}"
    try:
        ran = subprocess.run(["unshare", "--net", "--", sys.executable, "-m",
                              "tests.aws.netns_smoke", json.dumps(config)],
                             cwd=ROOT, capture_output=True, text=True, timeout=1300)
        assert ran.returncode == 0, ran.stderr[-3000:]
        report = json.loads(ran.stdout.splitlines()[-1])  # moto prints notes of its own
        assert report["boot_error"] is None
        out = report["stdout"]
        print(out)
        assert report["exit"] == 0, out + report["stderr"]
        first, relaunch = out.split("== relaunch: ")
        for step in ("identity", "ami", "bucket", "upload", "iam", "repository", "access",
                     "instance", "bootstrap", "image", "container", "attach"):
            for launch in (first, relaunch):
                assert any(line.split()[:1] == [step] for line in launch.splitlines()), out
        # the first launch built the image and pushed it; the relaunch's new instance pulled it
        assert "  = " + worker + ": built on the instance; pushed to ECR" in first
        assert "  = " + worker + ": pulled from ECR" in relaunch
        assert "cold start (first launch): " in first and "cold start (relaunch): " in relaunch
        assert any(line.startswith("image: ") and line.endswith(f" {SIZE}x{SIZE}")
                   for line in out.splitlines()), out  # the saved PNG, read back
        assert f"nothing tagged sdtui:deployment={NAME} is left" in out

        # the instance mounted with its role, through IMDSv2, and was given no keys
        fstab = (host / "etc/fstab").read_text()
        assert "iam_role=auto" in fstab and "passwd_file" not in fstab
        assert not (host / "etc/sdtui/s3fs-passwd").exists()
        assert report["imds"][0].startswith("PUT /latest/api/token")
        assert any(f"security-credentials/sdtui-{NAME}-role (with token) -> 200" in r
                   for r in report["imds"]), report["imds"]
        assert not any("without token" in r for r in report["imds"] if r.startswith("GET"))

        assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}={NAME}"})
        # the image was saved on this side and acknowledged, so the worker's spool on the
        # instance holds nothing (issue 10: worker copies live only until acknowledged)
        spool = host / "var/lib/sdtui/outputs"
        assert spool.is_dir() and not list(spool.glob("**/*.png"))
    finally:
        for container in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL}={NAME}"}):
            container.remove(force=True)
        subprocess.run(["umount", "-l", str(host / "mnt/sd-data")], capture_output=True)
        remove_tags(docker_client, worker, repository, base)
