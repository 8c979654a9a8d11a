"""The Docker SDK over ssh:// as Option A drives the instance's engine, against an sshd with
OpenSSH's default limit of 10 sessions per connection (MaxSessions, as on the instance): one
client serves a whole run's requests, each to its own URL, as a model switch's steps make them
(the image check, the old worker found and removed, a new one created, started and attached)."""

from __future__ import annotations

import docker.errors

from .test_worker_image_ecr import instance_engine  # noqa: F401 (a fixture)


def test_one_client_makes_more_requests_than_sshd_allows_sessions(instance_engine):  # noqa: F811
    _, connect = instance_engine
    with connect() as engine:
        for n in range(12):  # each URL its own: docker-py kept a session open for each
            try:
                engine.containers.get(f"sdtui-no-such-worker-{n}")
            except docker.errors.NotFound:
                continue
            raise AssertionError(f"a container sdtui-no-such-worker-{n} exists")
        assert engine.version()["ApiVersion"]
