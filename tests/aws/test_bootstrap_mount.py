"""The bootstrap's s3fs step, run for real: the whole host script in a sandbox root (as the
end-to-end test's "instance" runs it), Debian's s3fs 1.95 mounting a moto bucket over HTTP with
the test-only static keys, and, for the choice of s3fs, the distributions' own packages: Ubuntu
24.04's 1.93 (the Deep Learning AMI's) and Debian 12's 1.90 (as old as Ubuntu 22.04's).

s3fs daemonises before it checks the bucket and exits 0 whatever it finds there, so only a read
through the mount shows that it serves the model; what s3fs itself said goes into the failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sdtui.deploy.aws import s3fs
from sdtui.deploy.aws.bootstrap import HostPlan, bootstrap_script

from .s3fs_builds import NOBLE_S3FS_VERSION, install_wrapper, require

BUCKET = "sdtui-mount-models"


def sandbox_plan(tmp_path: Path, moto_url: str, bucket: str = BUCKET) -> HostPlan:
    return HostPlan(bucket=bucket, region="us-east-1", idle_minutes=30, gpu_probe_image=None,
                    user="root", prefix=str(tmp_path / "host"), s3_endpoint=moto_url,
                    s3_credentials=("testing", "testing"), probe_key="tiny.safetensors")


@pytest.fixture
def sandbox(tmp_path):
    require(os.geteuid() == 0, "needs root for FUSE")
    require(Path("/dev/fuse").exists(), "needs /dev/fuse")
    install_wrapper(tmp_path / "host" / s3fs.BINARY.lstrip("/"))
    yield tmp_path
    mount = tmp_path / "host" / "mnt/sd-data"
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # ends the s3fs daemon


def run_bootstrap(plan: HostPlan) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-s"], input=bootstrap_script(plan), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.docker
def test_the_mount_is_proven_by_reading_the_model_through_it(sandbox, aws, model, moto_url):
    aws["s3"].create_bucket(Bucket=BUCKET)
    aws["s3"].upload_file(str(model), BUCKET, "tiny.safetensors")
    result = run_bootstrap(sandbox_plan(sandbox, moto_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mounted (cache in " in result.stdout
    assert "tiny.safetensors read through it" in result.stdout
    assert "== host ready" in result.stdout
    mounted = sandbox / "host/mnt/sd-data/tiny.safetensors"
    assert mounted.read_bytes() == model.read_bytes()


def test_a_mount_that_serves_nothing_fails_with_what_s3fs_said(sandbox, aws, moto_url):
    """A missing bucket: s3fs exits 0, then finds no bucket and unmounts. `ls` of the bare
    mount point would pass; the bootstrap must stop there, with s3fs's own reason."""
    result = run_bootstrap(sandbox_plan(sandbox, moto_url, bucket="sdtui-no-such-bucket"))
    assert result.returncode == 3, result.stdout + result.stderr
    error = [line for line in result.stdout.splitlines() if line.startswith("ERROR: ")]
    assert error and error[-1].startswith(
        "ERROR: the mount of s3://sdtui-no-such-bucket at ")
    assert "does not serve tiny.safetensors; s3fs said: " in error[-1]
    assert "Bucket or directory not found" in error[-1]  # s3fs's own line, not syslog's
    assert "== docker" not in result.stdout
    assert not os.path.ismount(sandbox / "host/mnt/sd-data")  # a rerun mounts afresh


def install_script_run(tmp_path: Path, packaged: str) -> subprocess.CompletedProcess:
    """The s3fs step as it runs on an instance (build allowed), with the distribution's s3fs
    at the sandbox's /usr/bin and apt-get a stand-in that records its calls and refuses to
    install anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "apt-calls"}\n'
                   'case " $* " in *" update "*) exit 0 ;; esac\nexit 100\n')
    apt.chmod(0o755)
    host = tmp_path / "host"
    install_wrapper(host / s3fs.PACKAGED_BINARY.lstrip("/"), packaged)
    script = ('set -euo pipefail\nfail() { echo "ERROR: $*"; exit 3; }\n'
              + s3fs.install_script(str(host / s3fs.BINARY.lstrip("/")),
                                    str(host / s3fs.PACKAGED_BINARY.lstrip("/")))
              + 'echo "using $s3fs_bin"\n')
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})


def test_the_distributions_s3fs_is_used_when_it_has_the_imdsv2_fixes(tmp_path):
    """Ubuntu 24.04's own s3fs 1.93 package: used as it is, nothing installed or built."""
    result = install_script_run(tmp_path, "noble")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"s3fs {NOBLE_S3FS_VERSION} is installed (the distribution's package)" in result.stdout
    assert f"using {tmp_path}/host{s3fs.PACKAGED_BINARY}" in result.stdout
    assert not (tmp_path / "apt-calls").exists()


def test_an_older_distribution_s3fs_falls_back_to_the_build(tmp_path):
    """Debian 12's s3fs 1.90, whose archive offers 1.90 too (this machine's real apt-cache):
    the pinned 1.95 is built instead (here apt-get refuses, so the step stops at its packages)."""
    require(Path("/usr/bin/apt-cache").exists(), "needs apt-cache")
    result = install_script_run(tmp_path, "host")
    assert result.returncode == 3
    assert f"building s3fs {s3fs.VERSION} from source" in result.stdout
    assert "is installed" not in result.stdout
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert [c.split()[2] for c in calls] == ["update", "install"]
    assert "libfuse-dev" in calls[1] and " s3fs" not in calls[1]
