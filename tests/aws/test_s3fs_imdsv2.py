"""The instance's s3fs mount, run for real under IMDSv2: the bootstrap's exact mount command
(`iam_role=auto`, the real S3 URL over HTTPS) against an IMDSv2-only metadata stand-in at
169.254.169.254 and moto S3 that checks signatures and the role's policy, all inside network,
mount and PID namespaces this test makes (see netns_mount.py); nothing leaves the machine.

The s3fs under test is Ubuntu 24.04's own s3fs 1.93 package, the one the Deep Learning AMI
installs, and Debian trixie's s3fs 1.95-1, built from the very tarball the instance builds where
its distribution's s3fs is older (its source record's checksum is compared below); the host's
s3fs 1.90, the version Ubuntu 22.04 and Debian 12 ship, runs the same test and must fail it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdtui.deploy.aws import s3fs

from .s3fs_builds import (
    HOST_S3FS_VERSION,
    NOBLE_S3FS_VERSION,
    S3FS_ROOT,
    install_wrapper,
    require,
)

ROOT = Path(__file__).resolve().parents[2]


class S3fsMountFailed(Exception):
    """s3fs did not serve the checkpoint through the mount."""


def mount_in_namespace(tmp_path: Path, build: str, bucket: str, model: Path) -> dict:
    require(os.geteuid() == 0, "needs root for namespaces and FUSE")
    require(Path("/dev/fuse").exists(), "needs /dev/fuse")
    require(shutil.which("unshare") is not None and shutil.which("ip") is not None,
            "needs unshare (util-linux) and ip (iproute2)")
    work = tmp_path / "ns"
    install_wrapper(work / "host" / s3fs.BINARY.lstrip("/"), build)
    config = {"work": str(work), "region": "us-east-1", "name": "imds", "bucket": bucket,
              "model": str(model)}
    run = subprocess.run(
        ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
         "--propagation", "private", "--", sys.executable, "-m", "tests.aws.netns_mount",
         json.dumps(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def read_through_mount(report: dict) -> None:
    if report.get("sha256") != report["expected_sha256"]:
        raise S3fsMountFailed(
            f"{report['version']}: {report.get('read_error')}; exit {report['exit']} "
            f"{report['output']!r}; s3fs's log: {report['s3fs_log']!r}; metadata requests: "
            f"{report['imds']}")


@pytest.mark.parametrize("build, version", [
    pytest.param("trixie", s3fs.VERSION, id=f"s3fs-{s3fs.VERSION}"),
    pytest.param("noble", NOBLE_S3FS_VERSION, id=f"s3fs-{NOBLE_S3FS_VERSION}-ubuntu"),
    pytest.param("host", HOST_S3FS_VERSION, id=f"s3fs-{HOST_S3FS_VERSION}", marks=pytest.mark.xfail(
        strict=True, raises=S3fsMountFailed,
        reason="s3fs 1.90 asks IMDS for the role name without the IMDSv2 token (fixed in 1.91)")),
])
def test_the_bootstrap_mount_reads_the_checkpoint_with_the_instance_role(
        tmp_path, tiny_models, build, version):
    report = mount_in_namespace(tmp_path, build, "sdtui-imds-models", tiny_models["ckpt"])
    assert f"File System V{version} " in report["version"]
    # exactly the options the bootstrap writes: the instance role, the real S3 URL
    options = report["argv"][-1].split(",")
    assert "iam_role=auto" in options and "url=https://s3.us-east-1.amazonaws.com" in options
    assert not any(o.startswith("passwd_file") for o in options)
    read_through_mount(report)
    # IMDSv2 all the way: a session token first, then nothing asked without it
    assert report["imds"][0].startswith("PUT /latest/api/token")
    assert "-> 200" in report["imds"][0]
    assert not [r for r in report["imds"] if "without token" in r and r.startswith("GET")]
    assert any("security-credentials/sdtui-imds-role (with token) -> 200" in r
               for r in report["imds"])


def test_a_bucket_name_with_dots_mounts_by_path_over_verified_tls(tmp_path, tiny_models):
    """`my.models.s3.REGION.amazonaws.com` is not covered by S3's `*.s3.REGION` certificate:
    the mount must address such a bucket by path, and still verify the certificate."""
    report = mount_in_namespace(tmp_path, "trixie", "sdtui.imds.models", tiny_models["ckpt"])
    read_through_mount(report)
    assert "use_path_request_style" in report["argv"][-1].split(",")


def test_the_tested_s3fs_is_built_from_the_tarball_the_instance_builds():
    """Debian's record of the source its s3fs package was built from names the same tarball
    checksum the instance verifies before building."""
    record = S3FS_ROOT / "sdtui-s3fs-fuse.sources"
    require(record.exists(), f"needs {record} (scripts/s3fs-test-root.sh)")
    text = record.read_text()
    version = next(line.split()[1] for line in text.splitlines() if line.startswith("Version:"))
    assert version.startswith(f"{s3fs.VERSION}-")
    assert f"{s3fs.SOURCE_SHA256} " in text
    assert f"s3fs-fuse_{s3fs.VERSION}.orig.tar.gz" in text.split(s3fs.SOURCE_SHA256)[1]
    assert s3fs.SOURCE_URL.endswith(f"/v{s3fs.VERSION}.tar.gz")
