"""An OpenSSH server on 127.0.0.1 standing in for the instance: its host key is the one the
deployment put in the instance's user data, and it lets in the deployment's key pair only."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from sdtui.deploy.aws.access import private_key_path
from sdtui.deploy.aws.naming import tag_filter

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_key_from_user_data(ec2, instance_id: str) -> str:
    """What cloud-init would install: the ed25519 private host key from the user data."""
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    text = base64.b64decode(value["UserData"]["Value"]).decode()
    header, _, body = text.partition("\n")
    assert header == "#cloud-config"
    return json.loads(body)["ssh_keys"]["ed25519_private"]


def public_key_of(private_key: Path) -> str:
    key = serialization.load_ssh_private_key(private_key.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


class Sshd:
    def __init__(self, folder: Path, port: int, host_key_pem: str, authorized_public: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, port
        host_key = folder / "ssh_host_ed25519_key"
        host_key.write_text(host_key_pem)
        host_key.chmod(0o600)
        (folder / "authorized_keys").write_text(authorized_public + "\n")
        config = folder / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {folder / 'sshd.pid'}\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.log = open(folder / "sshd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "sshd.log").read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()

    def drop_sessions(self) -> int:
        """Kill every per-connection sshd process (the listener stays): each SSH connection
        drops, as when the network between the laptop and the instance goes away."""
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        for pid in children:
            subprocess.run(["kill", f"-{signal.SIGKILL.value}", pid], capture_output=True)
        return len(children)


class FakeBoot(threading.Thread):
    """Waits for the instance in moto, then 'boots' it: an sshd with the user data's host key
    that accepts the deployment's key pair. With `relaunch`, it goes on watching: a new instance
    (a relaunch after a teardown) replaces the sshd, after `on_boot` gave it a fresh host."""

    def __init__(self, ec2, name: str, folder: Path, port: int, *, relaunch: bool = False,
                 on_boot: Callable[[], None] = lambda: None) -> None:
        super().__init__(daemon=True)
        self.ec2, self.name, self.folder, self.port = ec2, name, folder, port
        self.relaunch, self.on_boot = relaunch, on_boot
        self.sshd: Sshd | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        booted = None
        try:
            while not self.stop.is_set():
                found = self.ec2.describe_instances(Filters=[
                    tag_filter(self.name), {"Name": "instance-state-name", "Values": ["running"]}
                ])["Reservations"]
                instance_id = found[0]["Instances"][0]["InstanceId"] if found else None
                if instance_id is not None and instance_id != booted:
                    if self.sshd is not None:
                        self.sshd.stop()
                        self.on_boot()
                    self.sshd = Sshd(self.folder, self.port,
                                     host_key_from_user_data(self.ec2, instance_id),
                                     public_key_of(private_key_path(self.name)))
                    booted = instance_id
                    if not self.relaunch:
                        return
                self.stop.wait(0.2)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            self.error = exc
