"""The scale-out's harness: its own moto server, because moto's Batch needs two settings the
rest of the AWS tests should not pay for: AWS managed policies loaded (the instance role attaches
the ECS one; +1 s per reset) and job containers on the host network, so a container reaches
moto at 127.0.0.1 as the client does. Plus a Service Quotas stand-in (quotas.py)."""

from __future__ import annotations

import pytest

from ..conftest import serve_moto
from .quotas import QuotaServer

QUOTA = 64.0


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    yield from serve_moto(tmp_path_factory, {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
                                             "MOTO_DOCKER_NETWORK_MODE": "host"})


@pytest.fixture(scope="session")
def quota_server():
    server = QuotaServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def quotas(quota_server, monkeypatch):
    """A quota of 64 vCPUs on-demand and spot unless a test sets another."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", quota_server.url)
    quota_server.values.clear()
    quota_server.values.update({"L-DB2E81BA": QUOTA, "L-3819A6DF": QUOTA})
    quota_server.calls.clear()
    return quota_server
