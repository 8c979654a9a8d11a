"""The instance's host bootstrap: one idempotent bash script, built by pure functions from a
`HostPlan`, run over SSH (stdin, never argv) with its output streamed as step logs.

It waits for cloud-init to finish booting, makes sure an s3fs with the IMDSv2 fixes is installed
(the distribution's, else a pinned build; see s3fs.py), mounts the bucket read-only with the
instance role's credentials from IMDSv2 (cache on the instance's NVMe when there is one) and
keeps the mount in /etc/fstab, proves the mount by reading one model file through it (s3fs
daemonises before it checks the bucket, so its exit status says nothing; its own log lines go
into the failure), checks Docker and the
NVIDIA runtime with a probe container, prepares the worker's outputs dir, and installs the
systemd timer that stops the instance after N idle minutes.

With an S3 endpoint override (AWS_ENDPOINT_URL[_S3], e.g. a VPC endpoint) s3fs uses that
endpoint with path-style requests, still with the instance role: the caller's own credentials
never leave the caller's machine.

Test-only settings (read by `host_plan_from_env`, documented in the README):
  SDTUI_TEST_HOST_PREFIX=DIR  every host path (mount point, fstab, s3fs, outputs, idle check,
                              units) lives under DIR, so a local sshd can stand in for the
                              instance; systemd and cloud-init are then not waited for.
  SDTUI_TEST_NO_GPU=1         skip the NVIDIA probe and run the worker without a GPU request.
  SDTUI_TEST_S3FS_CREDENTIALS=KEY:SECRET
                              mount with these static keys from a 0600 passwd file instead of
                              the instance role (moto has no instance metadata service); the
                              value is taken as given, never from the caller's credentials.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from sdtui.deploy.aws import s3fs
from sdtui.errors import DeploymentError
from sdtui.worker.activity import ACTIVITY_FILE

MOUNT_POINT = "/mnt/sd-data"
MOUNT_READ_TRIES = 10  # a second apart: s3fs checks the bucket after it has daemonised
S3FS_LOG_LINES = 3
OUTPUTS_DIR = "/var/lib/sdtui/outputs"
IDLE_CHECK = "/usr/local/sbin/sdtui-idle-check"
UNITS_DIR = "/etc/systemd/system"
PASSWD_FILE = "/etc/sdtui/s3fs-passwd"
NVME_DIR = "/opt/dlami/nvme"  # the Deep Learning AMI mounts the instance store here
FALLBACK_CACHE = "/var/cache/s3fs"
CLOUD_INIT_MARKER = "/var/lib/cloud/instance"  # present on a host cloud-init booted
CLOUD_INIT_WAIT_S = 600
TEST_CREDENTIALS = "SDTUI_TEST_S3FS_CREDENTIALS"
WORKER_UID = 1000  # the worker image's user
DOCKER_INFO_FORMAT = (
    "Docker {{.ServerVersion}}, runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}"
)


@dataclass(frozen=True)
class HostPlan:
    bucket: str
    region: str
    idle_minutes: int
    gpu_probe_image: str | None  # a CUDA image to run nvidia-smi in; None: no check (tests)
    user: str = "ubuntu"
    prefix: str = ""  # test sandbox root; "" on a real instance
    s3_endpoint: str | None = None
    s3_credentials: tuple[str, str] | None = None  # test-only static keys (TEST_CREDENTIALS)
    probe_key: str | None = None  # a model file read through the mount to prove it
    # The bucket may hold no file yet (the instance fetches the model after the bootstrap): a
    # listing of the mount proves it instead (s3fs itself refuses to mount a bucket it cannot
    # reach).
    probe_listing: bool = False

    def path(self, absolute: str) -> str:
        return f"{self.prefix}{absolute}"

    @property
    def mount_point(self) -> str:
        return self.path(MOUNT_POINT)

    @property
    def outputs_dir(self) -> str:
        return self.path(OUTPUTS_DIR)

    @property
    def activity_file(self) -> str:
        return f"{self.outputs_dir}/{ACTIVITY_FILE}"


def host_plan_from_env(bucket: str, region: str, idle_minutes: int, *, user: str,
                       probe_image: str, s3_endpoint: str | None,
                       probe_key: str | None = None, probe_listing: bool = False) -> HostPlan:
    no_gpu = os.environ.get("SDTUI_TEST_NO_GPU", "") == "1"
    return HostPlan(
        bucket=bucket, region=region, idle_minutes=idle_minutes, user=user,
        gpu_probe_image=None if no_gpu else probe_image,
        prefix=os.environ.get("SDTUI_TEST_HOST_PREFIX", "").rstrip("/"),
        s3_endpoint=s3_endpoint, s3_credentials=test_credentials(), probe_key=probe_key,
        probe_listing=probe_listing,
    )


def test_credentials() -> tuple[str, str] | None:
    """SDTUI_TEST_S3FS_CREDENTIALS=KEY:SECRET, for tests against moto only."""
    value = os.environ.get(TEST_CREDENTIALS, "")
    if not value:
        return None
    key, sep, secret = value.partition(":")
    if not (sep and key and secret):
        raise DeploymentError(f"{TEST_CREDENTIALS} is not KEY:SECRET",
                              fix="unset it (it is for tests only)")
    return key, secret


def s3fs_options(plan: HostPlan, cache_dir: str) -> str:
    passwd = plan.path(PASSWD_FILE) if plan.s3_credentials else None
    return s3fs.mount_options(plan.bucket, plan.region, cache_dir, endpoint=plan.s3_endpoint,
                              passwd_file=passwd, log_file=plan.path(s3fs.LOG_FILE))


def s3fs_mount_argv(plan: HostPlan, options: str) -> list[str]:
    return s3fs.mount_argv(plan.bucket, plan.mount_point, options, plan.path(s3fs.BINARY))


def mount_script(plan: HostPlan) -> str:
    """Mount unless a mount already serves the probe file; then prove it by reading that file
    (or, without one, the first file listed) through the mount. A mount that does not serve it
    is unmounted again, so a rerun mounts afresh; the failure carries s3fs's own last lines."""
    q = shlex.quote
    mount, fstab, log = q(plan.mount_point), q(plan.path("/etc/fstab")), q(plan.path(s3fs.LOG_FILE))
    probe = (f"{mount}/{q(plan.probe_key)}" if plan.probe_key
             else f'"$(find {mount} -maxdepth 3 -type f -print -quit)"')
    what = plan.probe_key or ("a listing" if plan.probe_listing else "a file")
    read = f"ls -A {mount}" if plan.probe_listing else f"head -c 1 -- {probe}"
    return f"""
echo "== mount s3://{plan.bucket} read-only at {plan.mount_point}"
if [ -d {q(plan.path(NVME_DIR))} ]; then cache={q(plan.path(NVME_DIR))}/s3fs-cache
else cache={q(plan.path(FALLBACK_CACHE))}; fi
mkdir -p "$cache" {mount} "$(dirname {log})"
opts="{s3fs_options(plan, '$cache')}"
entry="{plan.bucket} {plan.mount_point} fuse.s3fs _netdev,$opts 0 0"
mkdir -p "$(dirname {fstab})" && touch {fstab}
if ! grep -qxF "$entry" {fstab}; then
  grep -v " {plan.mount_point} fuse.s3fs " {fstab} > {fstab}.tmp || true
  echo "$entry" >> {fstab}.tmp && mv {fstab}.tmp {fstab}
  echo "fstab entry written: the mount survives a reboot"
fi
serves() {{ mountpoint -q {mount} && {read} >/dev/null 2>&1; }}
s3fs_said() {{ tail -n {S3FS_LOG_LINES} {log} 2>/dev/null | tr '\n' ' '; }}
if serves; then
  echo "already mounted (cache in $cache)"
else
  if mountpoint -q {mount}; then
    echo "the mount at {plan.mount_point} does not serve {what}; mounting it again"
    umount -l {mount} || true
  fi
  : > {log}
  "$s3fs_bin" {" ".join(map(q, s3fs_mount_argv(plan, "")[1:-1]))} "$opts" \
    || fail "s3fs could not mount s3://{plan.bucket}; s3fs said: $(s3fs_said)"
  for _ in $(seq {MOUNT_READ_TRIES}); do serves && break; sleep 1; done
  if ! serves; then
    umount -l {mount} 2>/dev/null || true
    fail "the mount of s3://{plan.bucket} at {plan.mount_point} does not serve {what}; \
s3fs said: $(s3fs_said)"
  fi
  echo "mounted (cache in $cache), {what} read through it"
fi
"""


def cloud_init_wait(plan: HostPlan) -> str:
    """Wait for cloud-init, so the bootstrap's apt-get does not race boot-time apt. Exit 2 is
    "degraded" (recoverable errors), which is not a failure."""
    marker = shlex.quote(plan.path(CLOUD_INIT_MARKER))
    return f"""echo "== cloud-init"
if command -v cloud-init >/dev/null && [ -e {marker} ]; then
  status=0
  timeout {CLOUD_INIT_WAIT_S} cloud-init status --wait >/dev/null || status=$?
  case "$status" in
    0) echo "cloud-init has finished booting the instance" ;;
    2) echo "cloud-init has finished, degraded (recoverable errors); continuing" ;;
    124) fail "cloud-init did not finish within {CLOUD_INIT_WAIT_S // 60} min (see cloud-init \
status --long)" ;;
    *) fail "cloud-init failed (exit $status; see cloud-init status --long)" ;;
  esac
else
  echo "not booted by cloud-init; nothing to wait for"
fi
"""


def idle_check_script(activity_file: str, idle_minutes: int, uptime_file: str = "/proc/uptime",
                      shutdown: str = "shutdown -h now") -> str:
    """Run every minute: shut down once the worker has been idle for `idle_minutes`. Idle time
    counts from the later of the last activity and the boot, so a restarted instance gets a
    full period. EC2 turns the shutdown into a stop (on-demand) or a termination (spot)."""
    return f"""#!/bin/sh
# Installed by sdtui: stop this instance after {idle_minutes} idle minutes.
set -eu
{idle_seconds_shell(activity_file, uptime_file)}
if [ "$idle" -ge {idle_minutes * 60} ]; then
  echo "sdtui: idle for $((idle / 60)) min; shutting down"
  {shutdown}
fi
"""


def idle_seconds_shell(activity_file: str, uptime_file: str = "/proc/uptime") -> str:
    """Shell lines that set $idle: seconds since the last activity or the boot."""
    return f"""now=$(date +%s)
boot=$((now - $(cut -d. -f1 {shlex.quote(uptime_file)})))
last=$(stat -c %Y {shlex.quote(activity_file)} 2>/dev/null || echo 0)
[ "$last" -lt "$boot" ] && last=$boot
idle=$((now - last))"""


def idle_probe_command(plan: HostPlan) -> str:
    """Prints the idle seconds; status() turns it into the time left."""
    return f"sh -c {shlex.quote(idle_seconds_shell(plan.activity_file) + chr(10) + 'echo $idle')}"


IDLE_SERVICE = """[Unit]
Description=sdtui idle auto-stop check

[Service]
Type=oneshot
ExecStart={check}
"""

IDLE_TIMER = """[Unit]
Description=sdtui idle auto-stop, checked every minute

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min
AccuracySec=10s

[Install]
WantedBy=timers.target
"""


def _write_file(path: str, content: str, mode: str) -> str:
    marker = "SDTUI_EOF"
    assert marker not in content
    q = shlex.quote(path)
    return (f"mkdir -p \"$(dirname {q})\"\n"
            f"cat > {q}.tmp <<'{marker}'\n{content}{marker}\n"
            f"chmod {mode} {q}.tmp && mv {q}.tmp {q}\n")


def bootstrap_script(plan: HostPlan) -> str:
    """The whole bootstrap. Contains credentials only with an endpoint override (tests), and is
    sent on stdin, so it must never be logged."""
    q = shlex.quote
    outputs = q(plan.outputs_dir)
    parts = ["""#!/bin/bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
fail() { echo "ERROR: $*"; exit 3; }

""", cloud_init_wait(plan), '\necho "== s3fs"\n',
             s3fs.install_script(plan.path(s3fs.BINARY), plan.path(s3fs.PACKAGED_BINARY),
                                 build=not plan.prefix)]
    if plan.s3_credentials:
        key, secret = plan.s3_credentials
        passwd = q(plan.path(PASSWD_FILE))
        parts.append(f"""mkdir -p "$(dirname {passwd})"
(umask 077 && printf '%s:%s\\n' {q(key)} {q(secret)} > {passwd})
""")
    parts.append(mount_script(plan))
    parts.append(f"""
echo "== docker"
docker info --format {q(DOCKER_INFO_FORMAT)} \\
  || fail "Docker is not running on the instance"
""")
    if plan.user != "root":
        user = q(plan.user)
        parts.append(f"id -nG {user} | grep -qw docker || usermod -aG docker {user}\n")
    if plan.gpu_probe_image:
        parts.append(f"""
echo "== NVIDIA GPU in a probe container"
docker run --rm --gpus all -e NVIDIA_DRIVER_CAPABILITIES=compute,utility \\
  {q(plan.gpu_probe_image)} nvidia-smi -L \\
  || fail "no NVIDIA GPU is usable from Docker (driver or nvidia-container-toolkit missing)"
""")
    else:
        parts.append('\necho "== GPU check skipped (SDTUI_TEST_NO_GPU=1)"\n')
    parts.append(f"""
echo "== worker outputs at {plan.outputs_dir}"
install -d -m 0755 -o {WORKER_UID} -g {WORKER_UID} {outputs}
touch {q(plan.activity_file)} && chown {WORKER_UID}:{WORKER_UID} {q(plan.activity_file)}

echo "== idle auto-stop after {plan.idle_minutes} min"
""")
    check = plan.path(IDLE_CHECK)
    parts.append(_write_file(check, idle_check_script(plan.activity_file, plan.idle_minutes),
                             "0755"))
    units = plan.path(UNITS_DIR)
    parts.append(_write_file(f"{units}/sdtui-idle.service", IDLE_SERVICE.format(check=check),
                             "0644"))
    parts.append(_write_file(f"{units}/sdtui-idle.timer", IDLE_TIMER, "0644"))
    if plan.prefix:
        parts.append('echo "test sandbox: the timer is installed, not started"\n')
    else:
        parts.append("""if [ ! -d /run/systemd/system ]; then
  fail "systemd is not running; the idle auto-stop cannot be enforced"
fi
if ! { systemctl daemon-reload && systemctl enable --now sdtui-idle.timer >/dev/null; }; then
  fail "could not start the idle auto-stop timer"
fi
echo "timer sdtui-idle.timer is active"
""")
    parts.append('echo "== host ready"\n')
    return "".join(parts)
