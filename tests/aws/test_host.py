"""The instance side, without an instance: the idle auto-stop check run for real in a sandbox
(a fake `shutdown` on PATH), the bootstrap script's mount and secrets, the launch settings the
idle stop relies on, and SSH that refuses any host key but the deployment's own."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sdtui.deploy.aws import ssh
from sdtui.deploy.aws.access import write_private_key
from sdtui.deploy.aws.bootstrap import HostPlan, bootstrap_script, idle_check_script
from sdtui.deploy.aws.deployment import AwsDeployment
from sdtui.deploy.aws.heartbeat import HostHeartbeat, touch_command
from sdtui.deploy.aws.instance import LaunchSpec, launch_request
from sdtui.deploy.aws.settings import AwsSettings
from sdtui.deploy.base import StepContext
from sdtui.errors import DeploymentError

from .sshd import Sshd, free_port, public_key_of


def run_idle_check(tmp_path: Path, idle_s: float, uptime_s: float, minutes: int = 30) -> bool:
    """Run the installed check once; True when it called shutdown."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    called = tmp_path / "shutdown-called"
    called.unlink(missing_ok=True)
    fake = bin_dir / "shutdown"
    fake.write_text(f'#!/bin/sh\necho "$@" > {called}\n')
    fake.chmod(0o755)
    activity = tmp_path / ".last-activity"
    activity.touch()
    then = time.time() - idle_s
    os.utime(activity, (then, then))
    uptime = tmp_path / "uptime"
    uptime.write_text(f"{uptime_s:.2f} 1234.00\n")
    script = tmp_path / "sdtui-idle-check"
    script.write_text(idle_check_script(str(activity), minutes, str(uptime), "shutdown -h now"))
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    subprocess.run([str(script)], env=env, check=True, capture_output=True)
    if called.exists():
        assert called.read_text().split() == ["-h", "now"]
        return True
    return False


def test_idle_check_shuts_down_only_after_the_idle_period(tmp_path):
    day = 86400
    assert run_idle_check(tmp_path, idle_s=31 * 60, uptime_s=day)
    assert not run_idle_check(tmp_path, idle_s=29 * 60, uptime_s=day)
    assert run_idle_check(tmp_path, idle_s=6 * 60, uptime_s=day, minutes=5)


def test_a_restarted_instance_gets_a_full_idle_period(tmp_path):
    # the activity file is old, but the instance booted 2 minutes ago
    assert not run_idle_check(tmp_path, idle_s=5 * 3600, uptime_s=120)


def plan(**overrides) -> HostPlan:
    values = dict(bucket="my-models", region="eu-west-1", idle_minutes=30,
                  gpu_probe_image="python:3.11-slim")
    values.update(overrides)
    return HostPlan(**values)


def test_bootstrap_mounts_read_only_with_the_instance_role_and_checks_the_gpu():
    script = bootstrap_script(plan())
    assert "iam_role=auto" in script and "ro,allow_other" in script
    assert "my-models /mnt/sd-data fuse.s3fs _netdev," in script  # the fstab entry
    assert "docker run --rm --gpus all" in script
    assert "python:3.11-slim nvidia-smi -L" in script  # the probe pulls the build's base
    assert "passwd_file" not in script
    assert "systemctl daemon-reload && systemctl enable --now sdtui-idle.timer" in script


def test_an_endpoint_override_is_used_with_the_instance_role():
    """A VPC or FIPS endpoint (AWS_ENDPOINT_URL) changes where s3fs goes, not whose keys."""
    script = bootstrap_script(plan(s3_endpoint="https://bucket.vpce-0abc.s3.eu-west-1.vpce.amazonaws.com"))
    assert "url=https://bucket.vpce-0abc.s3.eu-west-1.vpce.amazonaws.com" in script
    assert "iam_role=auto" in script and "passwd" not in script


def test_test_credentials_go_to_a_private_passwd_file():
    script = bootstrap_script(plan(s3_endpoint="http://127.0.0.1:5000",
                                   s3_credentials=("AKIDTEST", "s3cr3t")))
    assert "url=http://127.0.0.1:5000" in script and "use_path_request_style" in script
    assert "iam_role" not in script
    assert "umask 077" in script  # the credentials file is 0600 from the start


def test_the_bootstrap_fails_without_systemd_outside_the_test_sandbox(tmp_path):
    """Run the tail of the real script: no systemd here, no sandbox prefix -> an error."""
    if Path("/run/systemd/system").is_dir():
        pytest.skip("this machine runs systemd")
    script = bootstrap_script(plan(prefix=""))
    tail = script[script.index('if [ ! -d /run/systemd/system ]'):]
    result = subprocess.run(["bash", "-c", 'fail() { echo "ERROR: $*"; exit 3; }\n' + tail],
                            capture_output=True, text=True)
    assert result.returncode == 3
    assert "idle auto-stop cannot be enforced" in result.stdout


def spec(**overrides) -> LaunchSpec:
    values = dict(name="t1", instance_type="g4dn.xlarge", image_id="ami-0123456789abcdef0",
                  root_device_name="/dev/sda1", volume_gb=100, instance_profile="sdtui-t1",
                  key_name="sdtui-t1", security_group_id="sg-1", user_data="#cloud-config\n{}")
    values.update(overrides)
    return LaunchSpec(**values)


def test_an_idle_shutdown_stops_on_demand_and_terminates_spot():
    assert launch_request(spec(), "subnet-1")["InstanceInitiatedShutdownBehavior"] == "stop"
    spot = launch_request(spec(spot=True), "subnet-1")
    assert spot["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert spot["UserData"].startswith("#cloud-config")


def test_the_user_data_carries_the_pinned_host_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    data = ssh.user_data("t1")
    target = ssh.SshTarget("ubuntu", "198.51.100.4")
    pinned = ssh.pin_host_key("t1", target).read_text()
    public = pinned.split(" ", 1)[1].strip()
    assert pinned.startswith("198.51.100.4 ssh-ed25519 ")
    assert public in data and "ed25519_private" in data
    assert (ssh.host_key_path("t1").stat().st_mode & 0o777) == 0o600
    assert ssh.user_data("t1") == data  # generated once per deployment


def test_ssh_refuses_a_host_that_presents_another_key(tmp_path, monkeypatch):
    """No trust on first use: only the key sdtui generated for the instance is accepted."""
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    user_key = tmp_path / "id"
    write_private_key(user_key)
    impostor_key = tmp_path / "impostor"
    write_private_key(impostor_key)
    ours, _ = ssh.ensure_host_key("t1")
    port = free_port()
    target = ssh.SshTarget("root", "127.0.0.1", port)
    known_hosts = ssh.pin_host_key("t1", target)

    impostor = Sshd(tmp_path / "impostor-sshd", port, impostor_key.read_text(),
                    public_key_of(user_key))
    try:
        with pytest.raises(DeploymentError, match="host key that is not the one"):
            ssh.open_ssh(target, user_key, known_hosts, wait_s=5)
    finally:
        impostor.stop()

    genuine = Sshd(tmp_path / "genuine-sshd", port, ours, public_key_of(user_key))
    try:
        client = ssh.open_ssh(target, user_key, known_hosts, wait_s=5)
        lines: list[str] = []
        assert ssh.run_script(client, "echo hello from $(id -un)\nexit 3\n", sudo=False,
                              on_line=lines.append) == 3
        assert lines == ["hello from root"]
        client.close()
    finally:
        genuine.stop()


def test_instance_ssh_override_is_user_host_port(monkeypatch):
    monkeypatch.setenv("SDTUI_INSTANCE_SSH", "root@127.0.0.1:2222")
    assert ssh.instance_target("54.1.2.3") == ssh.SshTarget("root", "127.0.0.1", 2222)
    monkeypatch.setenv("SDTUI_INSTANCE_SSH", "127.0.0.1:2222")
    assert ssh.instance_target(None).user == "ubuntu"
    monkeypatch.delenv("SDTUI_INSTANCE_SSH")
    assert ssh.instance_target("54.1.2.3") == ssh.SshTarget("ubuntu", "54.1.2.3", 22)


def test_the_heartbeat_keeps_the_idle_stop_away_while_a_step_runs(tmp_path, monkeypatch):
    """A long image build or model load sends the worker nothing: the client marks the host
    busy over SSH, so the idle check (run for real) does not stop it; without the marks it
    would."""
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    user_key = tmp_path / "id"
    write_private_key(user_key)
    host_key, _ = ssh.ensure_host_key("t1")
    port = free_port()
    target = ssh.SshTarget("root", "127.0.0.1", port)
    known_hosts = ssh.pin_host_key("t1", target)
    activity = tmp_path / ".last-activity"
    activity.touch()
    long_ago = time.time() - 31 * 60
    os.utime(activity, (long_ago, long_ago))
    sshd = Sshd(tmp_path / "sshd", port, host_key, public_key_of(user_key))
    try:
        connect = lambda: ssh.open_ssh(target, user_key, known_hosts, wait_s=5)  # noqa: E731
        with HostHeartbeat(connect, touch_command(str(activity), sudo=False), every_s=0.2) as beat:
            deadline = time.monotonic() + 20
            while beat.beats < 2 and time.monotonic() < deadline:  # the step "runs"
                time.sleep(0.05)
        assert beat.beats >= 2
    finally:
        sshd.stop()
    assert activity.stat().st_mtime > long_ago + 60
    idle = time.time() - activity.stat().st_mtime
    (tmp_path / "check").mkdir()
    assert not run_idle_check(tmp_path / "check", idle_s=idle, uptime_s=86400)
    assert run_idle_check(tmp_path / "check", idle_s=31 * 60, uptime_s=86400)  # no heartbeat


def test_the_image_worker_start_and_model_load_run_under_the_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    model = tmp_path / "tiny.safetensors"
    model.write_bytes(b"\x13\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}' + b"\0" * 64)
    deployment = AwsDeployment(AwsSettings(name="t1", region="us-east-1", bucket="my-models",
                                           models=[model], ssh_cidr="203.0.113.7/32"))
    active: list[str | None] = []

    class Recorder:
        def __init__(self, connect, command):
            self.command = command

        def __enter__(self):
            active.append(self.command)

        def __exit__(self, *exc_info):
            active.append(None)

    deployment.heartbeat = Recorder
    monkeypatch.setattr(deployment, "_find_running", lambda: {"PublicIpAddress": "198.51.100.4"})
    seen = {}
    for method, name in (("_pull_or_build", "image"), ("_create_container", "container"),
                         ("_attach", "attach")):
        monkeypatch.setattr(deployment, method,
                            lambda ctx, name=name: seen.setdefault(name, active[-1]))
    steps = {step.name: step for step in deployment.plan()}
    for name in ("image", "container", "attach"):
        steps[name].run(StepContext(name, lambda event: None, threading.Event()))
    assert seen == dict.fromkeys(
        ("image", "container", "attach"), "sudo -n touch -c /var/lib/sdtui/outputs/.last-activity")
    assert active[-1] is None  # the heartbeat stops with the step
