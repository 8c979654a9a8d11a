"""What the instance is given, checked with the tools that read it there: cloud-init's own
schema validator for the user data, shellcheck for the bootstrap script, systemd-analyze for
the idle-stop units; and the bootstrap's waits for boot-time cloud-init and apt, run with
stand-ins for the commands that would change this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sdtui.deploy.aws import s3fs, ssh
from sdtui.deploy.aws.bootstrap import (
    IDLE_SERVICE,
    IDLE_TIMER,
    HostPlan,
    bootstrap_script,
    cloud_init_wait,
    idle_check_script,
)
from sdtui.deploy.aws.deployment import AwsDeployment
from sdtui.deploy.aws.ssh import SshTarget

from .helpers import settings


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is missing (scripts/setup-test-env.sh installs it)")
        pytest.skip(f"needs {tool}")
    return path


def plan(**overrides) -> HostPlan:
    values = dict(bucket="my-models", region="eu-west-1", idle_minutes=30,
                  gpu_probe_image="python:3.11-slim")
    values.update(overrides)
    return HostPlan(**values)


def test_the_user_data_passes_cloud_inits_schema(tmp_path, monkeypatch):
    need("cloud-init")
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    user_data = tmp_path / "user-data"
    user_data.write_text(ssh.user_data("t1"))
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(user_data)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout
    assert "ssh_genkeytypes" not in user_data.read_text()  # ssh_keys already replaces them


@pytest.mark.parametrize("variant", [
    plan(),
    plan(bucket="my.models", gpu_probe_image=None),
    plan(s3_endpoint="http://127.0.0.1:5000", s3_credentials=("AKIDTEST", "s3cr3t")),
    plan(prefix="/tmp/sandbox", user="root"),
], ids=["instance", "dotted-no-gpu", "test-credentials", "sandbox"])
def test_the_bootstrap_passes_shellcheck(variant):
    need("shellcheck")
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"],
                            input=bootstrap_script(variant), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_idle_stop_units_pass_systemd_analyze(tmp_path):
    need("systemd-analyze")
    check = tmp_path / "sdtui-idle-check"
    check.write_text(idle_check_script(str(tmp_path / ".last-activity"), 30))
    check.chmod(0o755)
    (tmp_path / "sdtui-idle.service").write_text(IDLE_SERVICE.format(check=check))
    (tmp_path / "sdtui-idle.timer").write_text(IDLE_TIMER)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "sdtui-idle.timer"),
                             str(tmp_path / "sdtui-idle.service")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def fake_command(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def run_snippet(snippet: str, bin_dir: Path) -> subprocess.CompletedProcess:
    script = 'set -euo pipefail\nfail() { echo "ERROR: $*"; exit 3; }\n' + snippet
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})


@pytest.mark.parametrize("status, outcome", [
    (0, "cloud-init has finished booting"),
    (2, "degraded (recoverable errors); continuing"),
    (1, "ERROR: cloud-init failed (exit 1"),
])
def test_the_bootstrap_waits_for_cloud_init(tmp_path, status, outcome):
    """`cloud-init status --wait` blocks until boot is done; exit 2 means degraded, not
    failed."""
    calls = tmp_path / "calls"
    fake_command(tmp_path / "bin", "cloud-init", f'echo "$@" >> {calls}; exit {status}')
    sandbox = tmp_path / "host"
    (sandbox / "var/lib/cloud/instance").mkdir(parents=True)
    result = run_snippet(cloud_init_wait(plan(prefix=str(sandbox))), tmp_path / "bin")
    assert outcome in result.stdout
    assert result.returncode == (3 if status == 1 else 0)
    assert calls.read_text().split() == ["status", "--wait"]
    script = bootstrap_script(plan())
    assert script.index(cloud_init_wait(plan())) < script.index("apt-get")  # waits first


def test_a_host_not_booted_by_cloud_init_is_not_waited_for(tmp_path):
    fake_command(tmp_path / "bin", "cloud-init", "sleep 600")  # as it does on such a host
    result = run_snippet(cloud_init_wait(plan(prefix=str(tmp_path / "host"))), tmp_path / "bin")
    assert result.returncode == 0 and "nothing to wait for" in result.stdout


def test_apt_waits_for_the_dpkg_lock_before_building_s3fs(tmp_path):
    """Boot-time apt holds the dpkg lock: every apt-get waits for it instead of failing."""
    calls = tmp_path / "apt-calls"
    fake_command(tmp_path / "bin", "apt-get",
                 f'echo "$@" >> {calls}; case " $* " in *" update "*) exit 0 ;; esac; exit 100')
    result = run_snippet(s3fs.install_script(str(tmp_path / "no-s3fs"),
                                             str(tmp_path / "no-packaged-s3fs")), tmp_path / "bin")
    assert result.returncode == 3
    assert f"could not install the packages s3fs {s3fs.VERSION} builds with" in result.stdout
    invocations = calls.read_text().splitlines()
    assert len(invocations) == 2 and all(
        line.startswith("-o DPkg::Lock::Timeout=300 ") for line in invocations)


def test_the_callers_credentials_never_reach_the_instance(model, monkeypatch):
    """With AWS_ENDPOINT_URL set (a VPC or FIPS endpoint for a real user), the instance still
    uses its role; static keys reach it only through the test-only setting."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACALLERS0WNKEY001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-callers-own-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3-fips.us-east-1.amazonaws.com")
    deployment = AwsDeployment(settings(model))
    host = deployment.host_plan(SshTarget("ubuntu", "198.51.100.4"))
    script = bootstrap_script(host)
    assert host.s3_credentials is None
    assert "AKIACALLERS0WNKEY001" not in script and "the-callers-own-secret" not in script
    assert "iam_role=auto" in script and "url=https://s3-fips.us-east-1.amazonaws.com" in script

    monkeypatch.setenv("SDTUI_TEST_S3FS_CREDENTIALS", "testing:testing")
    script = bootstrap_script(deployment.host_plan(SshTarget("root", "127.0.0.1", 2222)))
    assert "printf '%s:%s\\n' testing testing" in script and "passwd_file=" in script
    assert "the-callers-own-secret" not in script
