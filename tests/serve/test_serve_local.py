"""`sdtui serve` on Option B: the real worker in a real container with the tiny model, driven
over HTTP with `requests` as A1111 clients drive it (bodies in A1111's shapes, from its
`modules/api/models.py`). Every image answered is checked against the outputs and index.jsonl,
and against what the worker itself sent (its container's log)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from local_cli import FAST, Cli, finished_by_worker, labelled, throwaway_cli, wait_for
from PIL import Image

from sdtui.metadata.png_chunks import read_texts
from sdtui.outputs import read_index
from sdtui.serve.http import MAX_CONNECTIONS
from sdtui.worker.activity import ACTIVITY_FILE
from tests.vendor.a1111_infotext import parse_generation_parameters

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AUTH = ("alice", "s3cret")
# A body as A1111 clients send it: the fields they always fill in, at A1111's defaults.
BASE_BODY = {"prompt": "a red barn", "negative_prompt": "", "seed": -1, "batch_size": 1,
             "n_iter": 1, "steps": 4, "cfg_scale": 7.0, "width": 64, "height": 64,
             "sampler_name": "Euler a", "restore_faces": False, "tiling": False,
             "enable_hr": False, "denoising_strength": 0.7, "send_images": True,
             "save_images": False, "alwayson_scripts": {}, "override_settings": {}}


class Server:
    """A running `sdtui serve` and what it printed."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.cli = cli
        argv = [sys.executable, "-m", "sdtui", "serve", "--name", cli.name, "--port", "0",
                "--out", str(cli.out), *args]
        self.proc = subprocess.Popen(argv, env=cli.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                if line.startswith("serving ") and " at http://" in line:
                    self.url = line.split(" at ", 1)[1].split(" ", 1)[0]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        wait_for(ready.is_set, unless=lambda: False, timeout=600)
        assert self.url, "\n".join(self.lines)

    def post(self, route: str, body: dict, **kw) -> requests.Response:
        return requests.post(f"{self.url}/sdapi/v1/{route}", json=body, auth=AUTH, timeout=600,
                             **kw)

    def get(self, route: str, **kw) -> requests.Response:
        return requests.get(f"{self.url}/sdapi/v1/{route}", auth=AUTH, timeout=60, **kw)

    def idle(self) -> bool:
        state = self.get("progress").json()["state"]
        return state["job_count"] == 0 and state["queued"] == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def cli(tmp_path_factory, worker_image, docker_client, tiny_models) -> Iterator[Cli]:
    with throwaway_cli(tmp_path_factory.mktemp("serve"), docker_client) as c:
        r = c.run("--model", str(tiny_models["ckpt"]), "--prompt", "first", *FAST)
        assert r.returncode == 0, r.stderr
        yield c


@pytest.fixture(scope="module")
def server(cli) -> Iterator[Server]:
    s = Server(cli, "--api-auth", ":".join(AUTH))
    yield s
    s.stop()


@pytest.fixture
def container(cli, docker_client):
    (found,) = labelled(docker_client, cli.name)[0]
    return found


def index_keys(out: Path) -> Counter:
    return Counter((line["request"], line["index"]) for line in read_index(out))


def decoded(b64: str) -> bytes:
    return base64.b64decode(b64)


def wait_until(condition: Callable[[], bool], timeout: float = 300) -> None:
    wait_for(condition, unless=lambda: False, timeout=timeout)


def test_txt2img_answers_a1111s_shape_and_saves_every_image(server, cli):
    before = index_keys(cli.out)
    # the mark the idle auto-stop reads (Option A's host timer): an API request is activity
    activity = cli.state / "worker-outputs" / cli.name / ACTIVITY_FILE
    os.utime(activity, (0, 0))
    r = server.post("txt2img", {**BASE_BODY, "seed": 42, "batch_size": 2, "eta": 0.5})
    assert r.status_code == 200, r.text
    assert activity.stat().st_mtime > 0
    answer = r.json()
    assert set(answer) == {"images", "parameters", "info"}
    info = json.loads(answer["info"])  # a JSON string, as A1111's Processed.js()
    assert info["all_seeds"] == [42, 43] and info["seed"] == 42
    assert info["warnings"] == ["eta: sdtui's samplers use their own eta; ignored",
                                "save_images: sdtui saves every image to the deployment's "
                                "outputs"]
    assert answer["parameters"]["prompt"] == "a red barn"
    assert answer["parameters"]["batch_size"] == 2 and answer["parameters"]["styles"] is None
    assert len(answer["images"]) == 2
    new = index_keys(cli.out) - before
    assert len(new) == 2 and set(new.values()) == {1}
    lines = {line["params"]["seed"]: line for line in read_index(cli.out)
             if (line["request"], line["index"]) in new}
    for b64, infotext, seed in zip(answer["images"], info["infotexts"], (42, 43), strict=True):
        png = decoded(b64)
        assert Image.open(io.BytesIO(png)).size == (64, 64)
        texts, _ = read_texts(png, ["parameters"])
        assert texts["parameters"] == infotext  # the answer's info is the PNG's infotext
        assert parse_generation_parameters(infotext)["Seed"] == str(seed)
        assert lines[seed]["deployment"] == cli.name  # the app's gallery shows it
        assert (cli.out / lines[seed]["file"]).read_bytes() == png


def test_img2img_with_a_mask_starts_from_the_init_image(server, cli):
    first = server.post("txt2img", {**BASE_BODY, "seed": 5}).json()["images"][0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    body = {**BASE_BODY, "init_images": [first], "denoising_strength": 0.5, "seed": 6,
            "mask": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
            "mask_blur": 4, "inpainting_fill": 1, "resize_mode": 0}
    del body["enable_hr"]
    r = server.post("img2img", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    info = json.loads(answer["info"])
    assert info["denoising_strength"] == 0.5 and info["warnings"][-1].startswith("save_images")
    assert "Denoising strength: 0.5" in info["infotexts"][0]
    assert answer["parameters"]["init_images"] is None  # as A1111: not echoed back
    recorded = [line for line in read_index(cli.out) if line["params"].get("seed") == 6]
    assert len(recorded) == 1 and recorded[0]["params"]["mask"]  # the stored mask's record


def test_a_refused_field_is_422_naming_it_and_nothing_runs(server, cli, container):
    before = index_keys(cli.out)
    r = server.post("txt2img", {**BASE_BODY, "enable_hr": True, "hr_scale": 2})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "enable_hr"]
    assert "hires fix" in r.json()["detail"][0]["msg"]
    r = requests.post(f"{server.url}/sdapi/v1/txt2img", data=b'{"prompt": "x",', auth=AUTH,
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert index_keys(cli.out) == before and server.idle()


def test_wrong_or_missing_auth_is_401_with_no_work_done(server, cli, container):
    before, sent_before = index_keys(cli.out), finished_by_worker(container)
    for auth in [("alice", "wrong"), ("mallory", "s3cret"), None]:
        r = requests.post(f"{server.url}/sdapi/v1/txt2img", json=BASE_BODY, auth=auth,
                          timeout=60)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Basic"
    assert requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=60).status_code == 401
    assert index_keys(cli.out) == before and finished_by_worker(container) == sent_before


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    host, port = server.url.removeprefix("http://").split(":")
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nAuthorization: Basic " + token.encode() +
                  b"\r\nContent-Length: 200000000\r\n\r\n{\"prompt\": \"")
        answer = s.makefile("rb").readline()
    assert answer.startswith(b"HTTP/1.1 413")
    # a 50 MB body under the limit is read, and its 50 MB prompt refused by name
    r = server.post("txt2img", {**BASE_BODY, "prompt": "x" * 50_000_000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_lists_options_and_png_info(server):
    (model,) = server.get("sd-models").json()
    assert model["filename"].endswith("tiny.ckpt") and len(model["hash"]) == 10
    assert model["title"] == f"tiny.ckpt [{model['hash']}]"
    samplers = {s["name"] for s in server.get("samplers").json()}
    assert {"Euler a", "DPM++ 2M", "UniPC"} <= samplers
    assert {s["label"] for s in server.get("schedulers").json()} >= {"Automatic", "Karras"}
    options = server.get("options").json()
    assert options["sd_model_checkpoint"] == model["title"]
    assert server.post("options", {"sd_model_checkpoint": "tiny"}).status_code == 200
    r = server.post("options", {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body",
                                                                     "sd_model_checkpoint"]
    r = server.post("txt2img", {**BASE_BODY, "override_settings": {
        "sd_model_checkpoint": "sd_xl_base_1.0.safetensors"}})
    assert r.status_code == 404
    answer = server.post("txt2img", {**BASE_BODY, "seed": 77, "negative_prompt": "fog"}).json()
    info = server.post("png-info", {"image": answer["images"][0]}).json()
    assert info["info"] == json.loads(answer["info"])["infotexts"][0]
    assert info["parameters"]["Seed"] == "77" and info["parameters"]["Negative prompt"] == "fog"
    assert info["parameters"]["Size-1"] == "64" and "sd-metadata" in info["items"]


def test_progress_previews_and_interrupt_mid_batch_keeps_the_finished_images(server, cli):
    # 60 steps an image, a preview every 20: the test acts between the first image and the
    # last, a window of a whole image's steps.
    assert server.post("options", {"show_progress_every_n_steps": 20}).status_code == 200
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=server.post(
        "txt2img", {**BASE_BODY, "prompt": "interrupted", "steps": 60, "batch_size": 3})))
    try:
        t.start()
        seen: list[dict] = []

        def first_image_done_and_previewed() -> bool:
            p = server.get("progress").json()
            if p["current_image"]:
                seen.append(p)
            return (bool(seen) and p["state"]["job_no"] >= 1) or not t.is_alive()

        wait_until(first_image_done_and_previewed, timeout=600)
        assert server.post("interrupt", {}).status_code == 200
        t.join(timeout=600)
        assert seen and decoded(seen[-1]["current_image"]).startswith(b"\x89PNG")
        assert seen[-1]["state"]["job_count"] == 3 and 0 < seen[-1]["progress"] <= 1
        answer = result["r"].json()
        info = json.loads(answer["info"])
        assert info["interrupted"] is True and 1 <= len(answer["images"]) < 3
        saved = [line for line in read_index(cli.out) if line["params"]["prompt"] == "interrupted"]
        assert len(saved) == len(answer["images"])
        assert server.idle()
    finally:
        server.post("options", {"show_progress_every_n_steps": 0})
        if t.is_alive():  # leave the queue empty for the next test whatever happened
            server.post("interrupt", {})
            t.join(timeout=600)


def running(server: Server, prompt_count: int) -> Callable[[], bool]:
    """Whether the server's running request is one of `prompt_count` images (it reached the
    worker)."""
    return lambda: server.get("progress").json()["state"]["job_count"] == prompt_count


def test_requests_run_in_order_and_each_client_gets_its_own(server, cli):
    answers: dict[str, requests.Response] = {}

    def send(prompt: str, count: int) -> threading.Thread:
        t = threading.Thread(target=lambda: answers.update({prompt: server.post(
            "txt2img", {**BASE_BODY, "prompt": prompt, "batch_size": count})}))
        t.start()
        return t

    # Each is sent once the one before is in the queue (running, waiting or done), so first
    # come, first served means this order, however fast the worker is.
    threads = [send("order one", 3)]
    wait_until(lambda: running(server, 3)() or not threads[0].is_alive())
    for n, prompt in enumerate(["order two", "order three"], start=1):
        threads.append(send(prompt, 2))
        wait_until(lambda n=n, t=threads[-1]: server.get("progress").json()["state"][
            "queued"] >= n or not t.is_alive())
    for t in threads:
        t.join(timeout=600)
    for prompt, r in answers.items():
        info = json.loads(r.json()["info"])
        assert set(info["all_prompts"]) == {prompt} and len(r.json()["images"]) == len(
            info["all_prompts"])
    order = [line["params"]["prompt"] for line in read_index(cli.out)
             if line["params"]["prompt"].startswith("order ")]
    assert order == ["order one"] * 3 + ["order two"] * 2 + ["order three"] * 2


def test_a_client_that_disconnects_mid_request_loses_nothing(server, cli, container):
    host, port = server.url.removeprefix("http://").split(":")
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    body = json.dumps({**BASE_BODY, "prompt": "hung up", "batch_size": 3, "steps": 12}).encode()
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                  + token.encode() + b"\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(running(server, 3))
    # the client hung up while its request ran
    wait_until(server.idle)
    saved = [line for line in read_index(cli.out) if line["params"]["prompt"] == "hung up"]
    assert len(saved) == 3
    sent = {key for key, ev in finished_by_worker(container).items()
            if ev["params"]["prompt"] == "hung up"}
    assert {(line["request"], line["index"]) for line in saved} == sent
    assert max(index_keys(cli.out).values()) == 1  # nothing saved twice


def test_a_second_sdtui_client_runs_its_own_request_beside_the_server(server, cli):
    r = cli.run("--prompt", "from the cli", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "other_client" for e in events)
    assert server.idle()
    assert len([line for line in read_index(cli.out)
                if line["params"]["prompt"] == "from the cli"]) == 1


def refused_at_once(host: str, port: int) -> bool:
    """One more connection is answered 503 without sending anything (else it is closed again,
    which frees the slot it took)."""
    with socket.create_connection((host, port), timeout=2) as extra:
        try:
            return extra.makefile("rb").read().startswith(b"HTTP/1.1 503")
        except TimeoutError:
            return False


def test_idle_connections_beyond_the_cap_get_503_and_threads_stay_bounded(server):
    host, port = server.url.removeprefix("http://").split(":")
    threads = lambda: len(list(Path(f"/proc/{server.proc.pid}/task").iterdir()))  # noqa: E731
    before = threads()
    idle = [socket.create_connection((host, int(port)), timeout=60)
            for _ in range(MAX_CONNECTIONS)]
    try:
        # All taken once one more is refused: a thread count cannot say so, as a handler of
        # an earlier test's request (a client that hung up) may still end meanwhile.
        wait_until(lambda: refused_at_once(host, int(port)), timeout=120)
        for _ in range(10):
            with socket.create_connection((host, int(port)), timeout=60) as extra:
                answer = extra.makefile("rb").read()  # answered and closed at once
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in answer
        assert threads() <= before + MAX_CONNECTIONS
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: _ignore_errors(lambda: server.get("progress").status_code) == 200,
               timeout=60)


def test_serve_killed_with_three_requests_queued_runs_them_all_after_a_restart(server, cli,
                                                                              container):
    server.stop()  # this test runs its own servers
    first = Server(cli, "--api-auth", ":".join(AUTH))
    prompts = ["killed running", "killed queued 1", "killed queued 2"]

    def send(prompt: str, count: int, steps: int) -> None:
        threading.Thread(target=lambda: _ignore_errors(lambda: first.post(
            "txt2img", {**BASE_BODY, "prompt": prompt, "batch_size": count, "steps": steps})),
            daemon=True).start()

    def saved(prompt: str) -> list[tuple[str, int]]:
        return [(line["request"], line["index"]) for line in read_index(cli.out)
                if line["params"]["prompt"] == prompt]

    try:
        send(prompts[0], 2, 40)
        wait_until(running(first, 2))
        # Held mid-request (its 80 steps outlast the call), so that it is still running when the
        # server is killed, however fast this machine generates.
        container.pause()
        for n, prompt in enumerate(prompts[1:], start=1):
            send(prompt, 1, 2)
            wait_until(lambda n=n: first.get("progress").json()["state"]["queued"] >= n)
        first.proc.kill()  # SIGKILL: one request running in the worker, two waiting
        first.proc.wait(timeout=60)
        container.unpause()
        second = Server(cli, "--api-auth", ":".join(AUTH))
        try:
            # the queue left on disk is taken before the server answers: idle means all ran
            wait_until(lambda: len(saved(prompts[0])) == 2 and second.idle(), timeout=600)
        finally:
            second.stop()
    finally:
        container.reload()
        if container.status == "paused":
            container.unpause()
        first.stop()
    sent = finished_by_worker(container)
    for prompt, count in zip(prompts, (2, 1, 1), strict=True):
        by_worker = {key for key, ev in sent.items() if ev["params"]["prompt"] == prompt}
        assert len(saved(prompt)) == count, prompt
        assert sorted(saved(prompt)) == sorted(by_worker), prompt  # each saved exactly once
    assert max(index_keys(cli.out).values()) == 1
    said = [line for line in second.lines if not line.startswith("api: ")]
    assert any(line.startswith("adopted request ") for line in said), said
    assert any(line.startswith("resumed 2 request(s)") for line in said), said


def _ignore_errors(fn: Callable[[], object]) -> object:
    with contextlib.suppress(requests.RequestException):  # its server was killed
        return fn()
    return None
