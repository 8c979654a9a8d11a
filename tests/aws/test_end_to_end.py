"""Option A end to end, with everything real but the instance: moto over HTTP for S3, IAM, EC2,
STS and SSM (the Pricing API falls back to the built-in table), an sshd on 127.0.0.1 in place of
the instance, the real bootstrap script over SSH, s3fs mounting the moto bucket, the Docker SDK
over ssh:// driving this machine's engine, and the real worker reading the tiny model through
the mount. The "EC2 boot" is the one fake: when moto shows the instance running, the test starts
the sshd with the host key from the instance's user data.

Test settings used (documented in sdtui/deploy/aws/bootstrap.py and ssh.py):
SDTUI_INSTANCE_SSH, SDTUI_TEST_HOST_PREFIX, SDTUI_TEST_NO_GPU, SDTUI_TEST_DOCKERFILE,
SDTUI_TEST_S3FS_CREDENTIALS, SDTUI_TEST_ECR_REGISTRY (a docker-registry on 127.0.0.1 in place of
the account's ECR registry: the image is pushed there). The "instance" runs s3fs 1.95 (Debian
trixie's build of the version the real instance builds); test_s3fs_imdsv2.py runs the same mount
with the instance role."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from PIL import Image

from sdtui.ledger import Ledger
from sdtui.modelfiles import sha256_file
from sdtui.ui.core import resume_deployment

from .instance_sandbox import assert_nothing_left, boot_instance, clean_up_instance
from .serve_phase import serve_starts_the_stopped_instance

BUCKET = "sdtui-e2e-models"
NAME = "e2e"


def sdtui(*args: str) -> subprocess.CompletedProcess:
    """The real command, in its own process (the environment carries the test settings)."""
    return subprocess.run([sys.executable, "-m", "sdtui", "--no-ui", "--option", "aws",
                           "--name", NAME, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.docker
@pytest.mark.slow
def test_option_a_end_to_end(worker_image, docker_client, aws, tmp_path, monkeypatch,
                             ecr_registry, tiny_models):
    from conftest import OFFLINE_BASE

    laptop = tmp_path / "laptop"  # the user's copy: deleted halfway through
    laptop.mkdir()
    model = Path(shutil.copy(tiny_models["ckpt"], laptop))
    shutil.copytree(tiny_models["ckpt"].with_suffix(".config"), laptop / "tiny.config")
    host, mount, boot = boot_instance(monkeypatch, tmp_path, aws["ec2"], ecr_registry, NAME)
    boots = [boot]  # the last boots the instance again after serve_phase stops it
    out = tmp_path / "out"
    try:
        # The command as the user types it again (the SSH address is looked up on each run:
        # there is no internet here to look it up).
        deploy = ("--bucket", BUCKET, "--model", str(model), "--base-image", OFFLINE_BASE,
                  "--ssh-cidr", "203.0.113.7/32", "--idle-minutes", "20")
        run = sdtui(*deploy, "--prompt", "a lighthouse at dusk", "-n", "2", "--steps", "2",
                   "--width", "64", "--height", "64", "--seed", "7", "--out", str(out))
        assert boot.error is None
        assert run.returncode == 0, run.stderr

        # images arrived in the outputs dir; the worker's spool on the "host" let them go once
        # they were saved (acknowledged)
        saved = sorted(out.glob("*.png"))
        assert len(saved) == 2
        assert [str(p) for p in saved] == sorted(run.stdout.split())
        assert (host / "var/lib/sdtui/outputs/spool").is_dir()
        assert list((host / "var/lib/sdtui/outputs/spool").iterdir()) == []
        # the model's sha256, hashed for the upload, is in every image
        sha = sha256_file(model)
        for png in saved:
            assert f"Model hash: {sha[:10]}," in Image.open(png).text["parameters"]
        # the worker read the model through the s3fs mount, bound read-only at /data
        assert subprocess.run(["mountpoint", "-q", str(mount)]).returncode == 0
        assert (mount / model.name).stat().st_size == model.stat().st_size
        worker = docker_client.containers.get(f"sdtui-{NAME}-worker")
        data = next(m for m in worker.attrs["Mounts"] if m["Destination"] == "/data")
        assert (data["Source"], data["RW"]) == (str(mount), False)
        assert "fuse.s3fs" in (host / "etc/fstab").read_text()
        assert "SDTUI_EOF" not in run.stderr and "testing:testing" not in run.stderr
        assert (host / "usr/local/sbin/sdtui-idle-check").stat().st_mode & 0o111

        # the image the worker runs is in the deployment's ECR repository for the next launch
        pushed = Ledger.load(NAME).params["pushed_image"]
        assert pushed.startswith(f"{ecr_registry}/sdtui-{NAME}:")
        assert worker.image.id == docker_client.images.get(pushed).id
        assert boto3.client("ecr").describe_repositories()["repositories"][0][
            "repositoryName"] == f"sdtui-{NAME}"

        # The model file deleted on this machine (issue 19, section 8): a run needs no upload,
        # so the bucket's copy serves the same worker, which is not replaced.
        worker_id = worker.id
        model.unlink()
        shutil.rmtree(laptop / "tiny.config")
        again = sdtui(*deploy, "--prompt", "a lighthouse at dusk", "--steps", "2", "--width",
                      "64", "--height", "64", "--seed", "9", "--out", str(out))
        assert again.returncode == 0, again.stderr
        assert "tiny.ckpt is gone from this machine, the bucket's copy serves" in again.stderr
        assert len(list(out.glob("*.png"))) == 3
        assert docker_client.containers.get(f"sdtui-{NAME}-worker").id == worker_id

        # status: running, the idle stop counting down from 20 minutes, the bucket kept
        status = sdtui("--status")
        assert status.returncode == 0, status.stderr
        status = status.stdout
        assert "aws): ready" in status
        assert "idle stop in 19 min" in status or "idle stop in 20 min" in status
        assert "bucket" in status and "kept on teardown" in status
        # the app's cost poll, as its status bar calls it: EC2's launch time and price, and the
        # countdown read from the instance's activity file over SSH
        cost = resume_deployment(Ledger.load(NAME)).cost_update()
        assert cost is not None and cost.hourly_usd == 0.526  # g4dn.xlarge on demand
        assert cost.idle_stop_in_s is not None and 19 * 60 <= cost.idle_stop_in_s <= 20 * 60

        # sdtui serve over HTTP; a request for the instance stopped by its idle stop starts it
        serve_starts_the_stopped_instance(NAME, out, host, mount, boots, aws["ec2"],
                                          docker_client)

        # teardown leaves nothing tagged in moto, and the worker container is gone
        down = sdtui("--teardown", "--purge-bucket")
        assert down.returncode == 0, down.stderr
        assert_nothing_left(aws, docker_client, NAME, BUCKET)
    finally:
        for stale in boots[:-1]:
            stale.stop.set()
        clean_up_instance(docker_client, boots[-1], mount, ecr_registry, NAME)
