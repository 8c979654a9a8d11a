"""The scale-out's harness: the AWS tests' moto server (the end-to-end test runs its own, see
there), and a Service Quotas stand-in (quotas.py), since moto's answers for VPC quotas only."""

from __future__ import annotations

import pytest

from .quotas import QuotaServer

QUOTA = 64.0


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
