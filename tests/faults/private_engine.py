"""A Docker engine of the tests' own, to restart at will: everybody else's engine is shared and
is never stopped. Its own socket, data root, exec root (with its own containerd), pid file,
cgroup parent, an empty config file, and its own network namespace; `--bridge=none
--iptables=false`, so it makes no interface, no iptables rule and no sysctl change.

The network namespace is what makes `--bridge=none` safe on a shared machine: a dockerd started
with it deletes the interface named `docker0` (moby's removeDefaultBridgeInterface, "the
--bridge=none use case"), and in the host's namespace that is the shared engine's bridge. In a
namespace of its own (`unshare --net`, which then execs dockerd: its pid is the engine's) there
is no `docker0` to delete. The worker needs no network: it talks over its attached stdin and
stdout."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker

START_WAIT_S = 120


class PrivateEngine:
    def __init__(self) -> None:
        # Short paths: containerd's socket lives under the exec root (unix sockets: 108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="sdtui-pd-", dir="/tmp"))
        self.url = f"unix://{self.root}/docker.sock"
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "dockerd.log"
        self.host_bridge = host_bridge()

    def start(self) -> None:
        config = self.root / "daemon.json"  # never the host's /etc/docker/daemon.json
        config.write_text("{}")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "dockerd", "--config-file", str(config),
                 "--host", self.url, "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"),
                 "--bridge=none", "--iptables=false", "--ip6tables=false",
                 "--ip-forward=false", "--ip-masq=false",
                 "--cgroup-parent", f"/{self.root.name}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_WAIT_S
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            client = docker.DockerClient(base_url=self.url, timeout=5)
        except docker.errors.DockerException:
            return False
        try:
            return client.ping()
        except docker.errors.DockerException:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """As the engine stops on a host shutdown or a restart: SIGTERM, its containers are
        stopped, it exits."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=600)

    def load_image(self, shared: docker.DockerClient, tag: str) -> None:
        """The worker image, streamed from the shared engine (a build here would need the
        offline base image and the torch wheel all over again)."""
        private = self.client()
        try:
            private.api.load_image(shared.images.get(tag).save(chunk_size=2**20, named=True))
            private.images.get(tag)
        finally:
            private.close()

    def destroy(self) -> None:
        try:
            if self.proc is not None and self.answers():
                private = self.client()
                try:
                    for container in private.containers.list(all=True):
                        container.remove(force=True)
                finally:
                    private.close()
        finally:
            self.stop()
            subprocess.run(["umount", "-R", "-l", str(self.root / "exec")], capture_output=True)
            subprocess.run(["umount", "-R", "-l", str(self.root / "data")], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)
        assert host_bridge() == self.host_bridge, "the shared engine's docker0 was touched"


def host_bridge() -> str | None:
    """The shared engine's bridge as `ip` shows it (its index and address: deleted and made
    again, it has another index), or None where there is none."""
    shown = subprocess.run(["ip", "-o", "link", "show", "docker0"], capture_output=True,
                           text=True)
    return shown.stdout.split(":")[0] if shown.returncode == 0 else None
