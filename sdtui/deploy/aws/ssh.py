"""SSH to the instance with a verified host key: no trust on first use.

Before launch, sdtui generates an ed25519 *host* key pair for the deployment and hands it to
the instance in its cloud-init user data (`ssh_keys`); the instance's sshd then presents that
key. The public half is pinned in a per-deployment known_hosts under the state dir, and every
SSH connection (the bootstrap's and the Docker SDK's) loads only that file with paramiko's
RejectPolicy: a server that presents any other key is refused. The user's ~/.ssh is never read
or written.

`SDTUI_INSTANCE_SSH=[USER@]HOST:PORT` replaces the instance's public address; only tests use it
(an sshd on 127.0.0.1 stands in for the instance).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization

from sdtui.deploy.aws.access import write_private_key
from sdtui.errors import DeploymentError
from sdtui.paths import state_dir

DEFAULT_USER = "ubuntu"  # the Deep Learning AMI (Ubuntu)
CONNECT_WAIT_S = 300  # sshd comes up a minute or so after "running"
RETRY_DELAY_S = 1  # a refused connect costs nothing; a booting sshd is caught within a second


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def docker_url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def instance_target(public_ip: str | None) -> SshTarget:
    override = os.environ.get("SDTUI_INSTANCE_SSH", "").strip()
    if override:
        user, _, hostport = override.rpartition("@")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise DeploymentError(f"SDTUI_INSTANCE_SSH={override!r} is not [USER@]HOST:PORT",
                                  fix="unset it (it is for tests only)")
        return SshTarget(user or DEFAULT_USER, host, int(port))
    if not public_ip:
        raise DeploymentError("the instance has no public IP address",
                              fix="check that the default subnet assigns public addresses")
    return SshTarget(DEFAULT_USER, public_ip)


# --- the deployment's host key ----------------------------------------------------------------


def host_key_path(name: str) -> Path:
    return state_dir() / "keys" / f"{name}-host"


def known_hosts_path(name: str) -> Path:
    return state_dir() / "keys" / f"{name}-known_hosts"


def ensure_host_key(name: str) -> tuple[str, str]:
    """The deployment's host key (OpenSSH private PEM, public line), generated once, 0600."""
    path = host_key_path(name)
    if not path.exists():
        write_private_key(path)
    pem = path.read_bytes()
    key = serialization.load_ssh_private_key(pem, password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return pem.decode(), public


def delete_host_key(name: str) -> None:
    host_key_path(name).unlink(missing_ok=True)
    known_hosts_path(name).unlink(missing_ok=True)


def user_data(name: str) -> str:
    """cloud-init user data that installs our host key and no other (JSON is valid YAML).
    With `ssh_keys` given, cloud-init generates no host keys of its own; `ssh_deletekeys`
    removes any the image carried."""
    private, public = ensure_host_key(name)
    config = {
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": private, "ed25519_public": public},
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def pin_host_key(name: str, target: SshTarget) -> Path:
    """Write the known_hosts that names this address with our host key, and only that."""
    if not host_key_path(name).exists():
        raise DeploymentError(
            f"the host key of deployment {name!r} is missing from {host_key_path(name).parent}, "
            "so its instance cannot be verified",
            fix=f"tear it down (sdtui --no-ui --option aws --name {name} --teardown) and run again",
        )
    _, public = ensure_host_key(name)
    path = known_hosts_path(name)
    path.write_text(f"{target.known_hosts_name} {public}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


# --- connecting -----------------------------------------------------------------------------


def pinned_client(known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect_params(target: SshTarget, private_key: Path, timeout: float = 15) -> dict:
    return {"hostname": target.host, "port": target.port, "username": target.user,
            "key_filename": str(private_key), "look_for_keys": False, "allow_agent": False,
            "timeout": timeout, "banner_timeout": timeout, "auth_timeout": timeout}


def host_key_refused(target: SshTarget, exc: Exception) -> DeploymentError:
    return DeploymentError(
        f"{target.host}:{target.port} presented a host key that is not the one sdtui gave the "
        f"instance ({exc}); refusing to connect",
        fix="if the instance was replaced, run sdtui again; otherwise tear it down",
    )


def open_ssh(target: SshTarget, private_key: Path, known_hosts: Path, *,
             wait_s: float = CONNECT_WAIT_S, log: Callable[[str], None] = lambda line: None,
             sleep: Callable[[float], None] = time.sleep) -> paramiko.SSHClient:
    """Connect, retrying while the instance boots (bounded); a wrong host key fails at once."""
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        client = pinned_client(known_hosts)
        try:
            client.connect(**connect_params(target, private_key))
            return client
        except (paramiko.BadHostKeyException, paramiko.SSHException) as exc:
            client.close()
            if isinstance(exc, paramiko.BadHostKeyException) or "not found in known_hosts" in str(
                    exc):
                raise host_key_refused(target, exc) from None
            reason = str(exc)
        except (OSError, EOFError) as exc:
            client.close()
            reason = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            raise DeploymentError(
                f"could not reach {target.user}@{target.host}:{target.port} over SSH within "
                f"{wait_s:.0f} s ({reason})",
                fix="check the security group allows your address (--ssh-cidr) and run again",
            )
        if not announced:
            log(f"waiting for sshd on {target.host}:{target.port} ({reason})")
            announced = True
        sleep(RETRY_DELAY_S)


def run_script(client: paramiko.SSHClient, script: str, *, sudo: bool,
               on_line: Callable[[str], None]) -> int:
    """Run a bash script sent on stdin (so it never shows in a process list), streaming its
    combined output line by line. Returns the exit status."""
    command = "sudo -n bash -s" if sudo else "bash -s"
    channel = client.get_transport().open_session()
    channel.set_combine_stderr(True)
    channel.exec_command(command)
    channel.sendall(script.encode())
    channel.shutdown_write()
    buffer = b""
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace"))
    if buffer:
        on_line(buffer.decode(errors="replace"))
    status = channel.recv_exit_status()
    channel.close()
    return status


def run_command(client: paramiko.SSHClient, command: str, timeout: float = 20) -> str:
    _, stdout, _ = client.exec_command(command, timeout=timeout)
    return stdout.read().decode(errors="replace")
