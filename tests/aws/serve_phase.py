"""`sdtui serve` on Option A, as a phase of the end-to-end test (test_end_to_end.py), on the
deployment it made, so that it costs no provisioning of its own: a txt2img over HTTP saved once
to the deployment's outputs; then the instance stopped as its idle auto-stop stops it
(instance_sandbox.stop_instance), and the next request starting it again."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from serve.test_serve_local import AUTH, BASE_BODY, Server

from sdtui.deploy.aws.naming import tag_filter
from sdtui.outputs import read_index
from sdtui.worker.activity import ACTIVITY_FILE

from .instance_sandbox import stop_instance


def instance_state(ec2, name: str) -> str:
    (reservation,) = ec2.describe_instances(Filters=[tag_filter(name)])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def saved_once(out: Path, png: bytes, name: str) -> None:
    lines = read_index(out)
    assert set(Counter((x["request"], x["index"]) for x in lines).values()) == {1}
    (line,) = [x for x in lines if (out / x["file"]).read_bytes() == png]
    assert line["deployment"] == name


def serve_starts_the_stopped_instance(name: str, out: Path, host: Path, mount: Path,
                                      boots: list, ec2, docker_client) -> None:
    """`boots`: the harness's FakeBoot, to which the one that boots the instance again is
    appended (the caller cleans up the last)."""
    server = Server(SimpleNamespace(name=name, out=out, env=dict(os.environ)),
                    "--api-auth", ":".join(AUTH), "--ssh-cidr", "203.0.113.7/32")
    try:
        body = {**BASE_BODY, "prompt": "a harbour at night", "steps": 2}
        before = len(read_index(out))
        r = server.post("txt2img", body)
        assert r.ok, r.text
        saved_once(out, base64.b64decode(r.json()["images"][0]), name)

        boots.append(stop_instance(ec2, docker_client, boots[-1], mount, name))
        assert instance_state(ec2, name) == "stopped"
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
        saved_once(out, base64.b64decode(answer[0].json()["images"][0]), name)
        assert len(read_index(out)) == before + 2
        assert instance_state(ec2, name) == "running"
        assert any(t and t.startswith("starting instance (") for t in said), said
        assert f"the worker of {name} is gone; starting it again for the next request" in \
            server.lines, server.lines
        # the request counted as activity for the idle auto-stop
        activity = host / "var/lib/sdtui/outputs" / ACTIVITY_FILE
        assert activity.stat().st_mtime >= int(sent)
    finally:
        server.stop()
