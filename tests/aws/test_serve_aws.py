"""`sdtui serve` on Option A, on the end-to-end harness (tests/aws/test_end_to_end.py: moto over
HTTP, an sshd on 127.0.0.1 booted as the instance, the real bootstrap and s3fs mount, the real
worker over ssh://): a txt2img over HTTP saved once to the deployment's outputs; then the
instance stopped as its idle auto-stop stops it, and the next request starting it again."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from serve.test_serve_local import AUTH, BASE_BODY, Server

from sdtui.outputs import read_index
from sdtui.worker.activity import ACTIVITY_FILE

from .instance_sandbox import boot_instance, clean_up_instance, stop_instance

NAME = "s5-serve-a"  # the worker container: sdtui-s5-serve-a-worker


def instance_state(ec2) -> str:
    from sdtui.deploy.aws.naming import tag_filter

    (reservation,) = ec2.describe_instances(Filters=[tag_filter(NAME)])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def saved_once(out, png: bytes) -> None:
    lines = read_index(out)
    assert set(Counter((x["request"], x["index"]) for x in lines).values()) == {1}
    assert [x for x in lines if (out / x["file"]).read_bytes() == png] != []
    assert all(x["deployment"] == NAME for x in lines)


@pytest.mark.docker
@pytest.mark.slow
def test_serve_answers_over_http_and_starts_the_stopped_instance_for_a_request(
        worker_image, docker_client, aws, tmp_path, monkeypatch, ecr_registry, tiny_models):
    from conftest import OFFLINE_BASE

    host, mount, boot = boot_instance(monkeypatch, tmp_path, aws["ec2"], ecr_registry, NAME)
    out = tmp_path / "out"
    server = None
    try:
        made = subprocess.run(
            [sys.executable, "-m", "sdtui", "--no-ui", "--option", "aws", "--name", NAME,
             "--bucket", f"sdtui-{NAME}", "--model", str(tiny_models["ckpt"]), "--base-image",
             OFFLINE_BASE, "--ssh-cidr", "203.0.113.7/32", "--prompt", "made", "--steps", "2",
             "--width", "64", "--height", "64", "--out", str(out)],
            capture_output=True, text=True, timeout=600)
        assert made.returncode == 0, made.stderr
        server = Server(SimpleNamespace(name=NAME, out=out, env=dict(os.environ)),
                        "--api-auth", ":".join(AUTH), "--ssh-cidr", "203.0.113.7/32")
        body = {**BASE_BODY, "prompt": "a harbour at night", "steps": 2}

        r = server.post("txt2img", body)
        assert r.ok, r.text
        saved_once(out, base64.b64decode(r.json()["images"][0]))

        boot = stop_instance(aws["ec2"], docker_client, boot, mount, NAME)
        assert instance_state(aws["ec2"]) == "stopped"
        sent = time.time()
        answer: list = []
        asking = threading.Thread(target=lambda: answer.append(server.post("txt2img", {
            **body, "prompt": "a harbour at dawn"})))
        asking.start()
        said = set()
        while asking.is_alive():  # as an A1111 client polls while it waits
            said.add(server.get("progress").json()["textinfo"])
            asking.join(0.2)
        assert answer[0].ok, answer[0].text
        png = base64.b64decode(answer[0].json()["images"][0])
        saved_once(out, png)
        assert len(read_index(out)) == 3
        assert instance_state(aws["ec2"]) == "running"
        assert any(t and t.startswith("starting instance (") for t in said), said
        assert any(line == f"the worker of {NAME} is gone; starting it again for the next "
                   "request" for line in server.lines), server.lines
        # the request counted as activity for the idle auto-stop
        activity = host / "var/lib/sdtui/outputs" / ACTIVITY_FILE
        assert activity.stat().st_mtime >= int(sent)
    finally:
        if server is not None:
            server.stop()
        clean_up_instance(docker_client, boot, mount, ecr_registry, NAME)
