"""The Docker SDK driving the instance's engine over ssh://, with the deployment's pinned host
key and private key: docker-py's own paramiko adapter would read ~/.ssh/known_hosts and
~/.ssh/config, so a subclass that reads neither is mounted in its place.

The client is created with use_ssh_client=True (which connects nothing yet) and an explicit
API version (so nothing asks the engine before our adapter is mounted); the version is then
negotiated down to what the engine speaks."""

from __future__ import annotations

from pathlib import Path

import docker
import paramiko
from docker.constants import DEFAULT_DOCKER_API_VERSION
from docker.transport.sshconn import SSHConnection, SSHConnectionPool, SSHHTTPAdapter
from docker.utils import version_lt

from sdtui.deploy.aws.ssh import SshTarget, connect_params, host_key_refused, pinned_client
from sdtui.errors import EngineUnreachable

SSH_PREFIX = "http+docker://ssh"


class PinnedSSHAdapter(SSHHTTPAdapter):
    """SSHHTTPAdapter that trusts one known_hosts file and one private key, nothing else."""

    def __init__(self, target: SshTarget, private_key: Path, known_hosts: Path) -> None:
        self._target = target
        self._private_key = private_key
        self._known_hosts = known_hosts
        super().__init__(target.docker_url, timeout=None, shell_out=False)

    def _create_paramiko_client(self, base_url: str) -> None:
        self.ssh_client = pinned_client(self._known_hosts)
        self.ssh_params = connect_params(self._target, self._private_key, timeout=30)

    def get_connection(self, url: str, proxies: dict | None = None) -> SSHConnectionPool:
        # docker-py keeps a connection pool per request URL, each holding its own SSH session
        # open until 25 pools exist, while sshd allows 10 sessions per connection (MaxSessions,
        # the default): the 11th distinct request failed with "ChannelException(2, 'Connect
        # failed')". Every URL goes to the one engine, so one pool serves them all.
        with self.pools.lock:
            pool = self.pools.get(SSH_PREFIX)
            if pool is None:
                if not self.ssh_client.get_transport():
                    self._connect()
                pool = LiveSessionPool(ssh_client=self.ssh_client, timeout=self.timeout,
                                       maxsize=self.max_pool_size, host=self.ssh_host)
                self.pools[SSH_PREFIX] = pool
        return pool


class LiveSessionPool(SSHConnectionPool):
    """Hands out only sessions the engine has not closed: dockerd closes a connection idle for
    5 minutes (its ReadHeaderTimeout), so the one after a long build or push is dead, and
    docker-py's pool never checks (it skips urllib3's check, which calls fileno())."""

    def _get_conn(self, timeout: float | None) -> SSHConnection:
        conn = super()._get_conn(timeout)
        channel = conn.sock
        if channel is not None and (channel.closed or channel.eof_received):
            conn.close()
            return self._new_conn()
        return conn


def docker_over_ssh(target: SshTarget, private_key: Path, known_hosts: Path
                    ) -> docker.DockerClient:
    client = docker.DockerClient(base_url=target.docker_url, use_ssh_client=True,
                                 version=DEFAULT_DOCKER_API_VERSION, timeout=None)
    try:
        adapter = PinnedSSHAdapter(target, private_key, known_hosts)
    except paramiko.BadHostKeyException as exc:
        raise host_key_refused(target, exc) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if "not found in known_hosts" in str(exc):
            raise host_key_refused(target, exc) from None
        raise EngineUnreachable(
            f"cannot reach Docker on {target.user}@{target.host}:{target.port} over SSH ({exc})",
            fix="check the instance is running (sdtui --no-ui --option aws --status)",
        ) from None
    api = client.api
    api.mount(SSH_PREFIX, adapter)
    api._custom_adapter = adapter
    try:
        server = api.version(api_version=False)["ApiVersion"]
    except (docker.errors.DockerException, OSError, paramiko.SSHException) as exc:
        adapter.close()
        raise EngineUnreachable(
            f"Docker on {target.host} did not answer over SSH ({exc})",
            fix="the bootstrap checks Docker: run sdtui again to redo it",
        ) from None
    if version_lt(server, DEFAULT_DOCKER_API_VERSION):
        api._version = server
    return client
