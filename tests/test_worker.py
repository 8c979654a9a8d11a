"""The worker as a real process speaking the protocol on its stdin/stdout (no container)."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys

import pytest
from faults.matrix import Tmpfs
from PIL import Image

from sdtui.client import WorkerClient, decode_png
from sdtui.errors import SpoolFull, WorkerDied
from sdtui.metadata.reader import request_from_png
from sdtui.outputs import save_image
from sdtui.protocol import MAX_SEED, PROTOCOL_VERSION, ProtocolError
from sdtui.worker import spool
from sdtui.worker.__main__ import EXIT_TERMINATED
from sdtui.worker.server import Worker

FAST = {"steps": 4, "width": 64, "height": 64, "preview_every": 2}


class WorkerProcess:
    def __init__(self, model, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdtui.worker", "--model", str(model), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.client = WorkerClient.over_pipes(self.proc.stdout, self.proc.stdin)

    def stop(self) -> tuple[int, str]:
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=120)
        return rc, self.proc.stderr.read().decode()


@pytest.fixture(scope="module")
def worker(tiny_diffusers, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("worker-outputs")
    w = WorkerProcess(tiny_diffusers, "--outputs", str(outputs))
    w.outputs = outputs
    w.client.wait_ready(timeout=300)
    yield w
    w.stop()


def run(client, **params):
    return list(client.generate(**{"prompt": "a red fox", "seed": 11, **FAST, **params}))


def test_ready_reports_model_device_and_versions(worker, tiny_diffusers):
    ready = worker.client.ready
    assert ready["protocol"] == PROTOCOL_VERSION
    assert ready["model"] == str(tiny_diffusers) and ready["format"] == "diffusers"
    assert (ready["device"], ready["dtype"]) == ("cpu", "float32")
    assert ready["torch"] and ready["diffusers"] and ready["load_seconds"] > 0


def test_generate_streams_progress_previews_and_a_png_of_the_requested_size(worker):
    events = run(worker.client, width=64, height=128, count=1)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and kinds.count("image") == 1
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e["type"] == "preview"] == [2]
    image = next(e for e in events if e["type"] == "image")
    png = Image.open(io.BytesIO(decode_png(image)))
    assert png.format == "PNG" and png.size == (64, 128)
    preview = Image.open(io.BytesIO(decode_png(next(e for e in events if e["type"] == "preview"))))
    assert preview.size == (8, 16)  # the latent grid: a projection, not a VAE decode
    assert image["params"]["prompt"] == "a red fox" and image["params"]["steps"] == 4


def test_seeds_count_up_and_the_same_request_gives_the_same_pixels(worker):
    first = [e for e in run(worker.client, count=2) if e["type"] == "image"]
    again = [e for e in run(worker.client, count=2) if e["type"] == "image"]
    assert [e["seed"] for e in first] == [11, 12]
    pixels = [Image.open(io.BytesIO(decode_png(e))).tobytes() for e in first + again]
    assert pixels[0] == pixels[2] and pixels[1] == pixels[3] and pixels[0] != pixels[1]


def test_a_batch_from_the_highest_seed_wraps_and_every_image_re_runs(worker, tmp_path):
    """--seed 4294967295 -n 2: the second image's seed wraps to 0 (as variation seeds do), so
    every saved image records a seed a re-run (--from-png) accepts, and gives its pixels."""
    images = [e for e in run(worker.client, seed=MAX_SEED, count=2) if e["type"] == "image"]
    assert [e["seed"] for e in images] == [MAX_SEED, 0]
    for ev in images:
        worker.client.ack(ev["id"], ev["index"])
        saved = save_image(tmp_path, decode_png(ev), ev["params"])
        params, _warnings = request_from_png(saved, set())
        (again,) = [e for e in run(worker.client, **params) if e["type"] == "image"]
        worker.client.ack(again["id"])
        assert again["seed"] == ev["seed"] and decode_png(again) == decode_png(ev)


def test_cancel_stops_within_a_step_and_keeps_finished_images(worker):
    events, sent_cancel_at = [], None
    for ev in worker.client.generate(prompt="a slow one", seed=1, steps=60, width=64, height=64,
                                     count=3, preview_every=0):
        events.append(ev)
        if ev["type"] == "image" and sent_cancel_at is None:
            sent_cancel_at = len(events)
        if sent_cancel_at is not None and len(events) == sent_cancel_at + 3:
            worker.client.cancel(ev["id"])
            sent_cancel_at = len(events)
            cancel_sent = True
    done = events[-1]
    assert cancel_sent and done["type"] == "done" and done["cancelled"] is True
    assert done["images"] == 1 == sum(e["type"] == "image" for e in events)
    after = [e for e in events[sent_cancel_at:] if e["type"] == "progress"]
    assert len(after) <= 2, "the sampler ran on for more than a step after cancel"


def test_info_is_answered_while_a_generation_runs(worker):
    gen = worker.client.generate(prompt="busy", seed=3, steps=40, width=64, height=64,
                                 preview_every=0)
    first = next(gen)
    info = worker.client.info()
    rest = list(gen)
    assert info["busy"] == first["id"]
    assert rest[-1]["type"] == "done"


def test_bad_lines_get_error_events_and_the_worker_carries_on(tiny_diffusers):
    """Also: stdout carries only protocol lines (every line parses), from `ready` to the last
    request's `done`, and the worker exits 0 when its stdin closes."""
    lines = [
        {"type": "generate", "id": "w", "prompt": "p", "width": 100},
        {"type": "generate", "id": "s", "prompt": "p", "scheduler": "warp"},
        {"type": "generate", "id": "f", "prompt": "p", "colour": "red"},
        "{not json",
        {"type": "generate", "id": "ok", "prompt": "p", **FAST},
    ]
    stdin = b"".join((ln if isinstance(ln, str) else json.dumps(ln)).encode() + b"\n"
                     for ln in lines)
    proc = subprocess.run([sys.executable, "-m", "sdtui.worker", "--model", str(tiny_diffusers)],
                          input=stdin, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    evs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert evs[0]["type"] == "ready" and evs[-1]["type"] == "done"
    assert "image" in [e["type"] for e in evs]
    errors = [(e["id"], e["code"], e["message"]) for e in evs if e["type"] == "error"]
    assert errors[0] == ("w", "bad_request", "generate: width must be a multiple of 8, got 100")
    assert errors[1][:2] == ("s", "bad_request") and "valid schedulers: ddim" in errors[1][2]
    assert errors[2] == ("f", "bad_request", "generate: unknown field(s) colour")
    assert errors[3][:2] == (None, "malformed")
    assert [e["type"] for e in evs if e.get("id") == "ok"][-1] == "done"


def test_the_client_rejects_bad_values_before_sending(worker):
    with pytest.raises(ProtocolError, match="width must be a multiple of 8"):
        run(worker.client, width=100)


def test_unacked_images_can_be_fetched_until_acked(worker):
    worker.client.fetch()  # earlier tests left images unacked: clear them
    for ev in worker.client.fetch():
        worker.client.ack(ev["id"])
    for ev in worker.client.fetch():
        worker.client.ack(ev["id"])
    events = run(worker.client, count=2)
    rid = events[-1]["id"]
    fetched = worker.client.fetch()
    assert sorted((e["id"], e["index"]) for e in fetched) == [(rid, 0), (rid, 1)]
    assert all(e["recovered"] for e in fetched)
    worker.client.ack(rid, 0)
    assert [(e["id"], e["index"]) for e in worker.client.fetch()] == [(rid, 1)]
    worker.client.ack(rid)
    assert worker.client.fetch() == []


def spooled(outputs) -> list:
    return sorted((outputs / spool.DIR_NAME).glob("*" + spool.SUFFIX))


def test_a_finished_image_waits_in_the_spool_until_acked_even_across_a_restart(
        tiny_diffusers, tmp_path):
    """The worker's spool: written before the image is sent, deleted on ack, and loaded again
    by a worker that was killed, so no finished image lives only in memory."""
    first = WorkerProcess(tiny_diffusers, "--outputs", str(tmp_path))
    first.client.wait_ready(timeout=300)
    events = run(first.client, prompt="keep me", count=2)
    images = [e for e in events if e["type"] == "image"]
    rid = images[0]["id"]
    assert len(spooled(tmp_path)) == 2
    first.client.ack(rid, 0)
    assert first.client.info()["unacked"] == 1  # answered after the ack: it was applied
    assert len(spooled(tmp_path)) == 1
    first.proc.kill()
    first.proc.wait(timeout=60)

    second = WorkerProcess(tiny_diffusers, "--outputs", str(tmp_path))
    try:
        second.client.wait_ready(timeout=300)
        (again,) = second.client.fetch()
        assert again["recovered"] and (again["id"], again["index"]) == (rid, 1)
        assert decode_png(again) == decode_png(images[1])
        assert again["params"] == images[1]["params"] and again["seed"] == images[1]["seed"]
        second.client.ack(rid)
        assert second.client.info()["unacked"] == 0
        assert spooled(tmp_path) == [] and second.client.fetch() == []
    finally:
        second.stop()


def test_a_full_spool_refuses_new_requests_and_keeps_every_image(tiny_diffusers, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(spool, "MAX_IMAGES", 1)
    w = Worker(None, {}, io.BytesIO(), tmp_path)
    w.spool.put({"type": "image", "id": "a", "index": 0, "seed": 1, "png": "", "params": {},
                 "seconds": None, "recovered": False})
    w.handle_line(json.dumps({"type": "generate", "id": "b", "prompt": "p"}).encode())
    (line,) = w._out.getvalue().splitlines()
    error = json.loads(line)
    assert (error["type"], error["id"], error["code"]) == ("error", "b", "spool_full")
    assert "1 unsaved image(s)" in error["message"] and "run sdtui" in error["message"]
    assert len(spooled(tmp_path)) == 1


def test_sigterm_while_idle_exits_cleanly_with_the_stopped_code(tiny_diffusers):
    """`docker stop` of an idle worker: the exit code the client reads as "stopped", never an
    interpreter abort (a reader thread held stdin's lock at shutdown: exit 134/139)."""
    w = WorkerProcess(tiny_diffusers)
    w.client.wait_ready(timeout=300)
    assert w.client.info()["busy"] is None
    w.proc.send_signal(signal.SIGTERM)
    rc = w.proc.wait(timeout=120)
    err = w.proc.stderr.read().decode()
    assert rc == EXIT_TERMINATED and "Fatal Python error" not in err, err


def test_sigterm_mid_batch_stops_after_the_current_step_and_keeps_the_spool(tiny_diffusers,
                                                                           tmp_path):
    w = WorkerProcess(tiny_diffusers, "--outputs", str(tmp_path))
    w.client.wait_ready(timeout=300)
    seen = []
    with pytest.raises(WorkerDied):
        for ev in w.client.generate(prompt="stopped", seed=5, steps=40, width=64, height=64,
                                    count=3, preview_every=0):
            seen.append(ev)
            if ev["type"] == "image":
                w.proc.send_signal(signal.SIGTERM)
    rc = w.proc.wait(timeout=120)
    err = w.proc.stderr.read().decode()
    assert rc == EXIT_TERMINATED and "Fatal Python error" not in err, err
    assert "done" not in [e["type"] for e in seen]  # stopped, not a user's cancel
    after = [e for e in seen[seen.index(next(e for e in seen if e["type"] == "image")):]
             if e["type"] == "progress"]
    assert len(after) <= 2, "the sampler ran on for more than a step after SIGTERM"
    finished = [(e["id"], e["index"]) for e in seen if e["type"] == "image"]

    again = WorkerProcess(tiny_diffusers, "--outputs", str(tmp_path))
    try:
        again.client.wait_ready(timeout=300)
        assert [(e["id"], e["index"]) for e in again.client.fetch()] == finished
    finally:
        again.stop()


@pytest.fixture
def small_disk(tmp_path):
    disk = Tmpfs(tmp_path / "outputs", size="2m")
    yield disk
    disk.unmount()


def test_a_spool_disk_that_fills_mid_batch_stops_the_request_and_loses_nothing(
        tiny_diffusers, small_disk):
    """The worker never finishes an image it cannot keep: once its spool's disk is full it
    stops the request (spool_full) instead of going on with images that live only in memory;
    every image it sent is on disk, and a restarted worker offers every one of them again."""
    w = WorkerProcess(tiny_diffusers, "--outputs", str(small_disk.path))
    w.client.wait_ready(timeout=300)
    sent = []
    with pytest.raises(SpoolFull) as caught:
        for ev in w.client.generate(prompt="no room", seed=7, steps=4, width=64, height=64,
                                    count=6, preview_every=0):
            if ev["type"] == "image":
                sent.append((ev["id"], ev["index"]))
                small_disk.fill()
    message = str(caught.value)
    # The disk filled while image 2 was made (written: ENOSPC) or before (checked: 0 MiB free).
    assert re.search(r"No space left on device|0\.\d MiB free", message), message
    assert "stopped the request after 1 of 6 image(s)" in message, message
    assert "\n" not in message
    assert sent == [(sent[0][0], 0)]
    assert w.client.info()["unacked"] == len(spooled(small_disk.path)) == 1
    w.proc.kill()
    w.proc.wait(timeout=60)

    small_disk.free()
    again = WorkerProcess(tiny_diffusers, "--outputs", str(small_disk.path))
    try:
        again.client.wait_ready(timeout=300)
        assert [(e["id"], e["index"]) for e in again.client.fetch()] == sent
    finally:
        again.stop()


def test_a_request_whose_images_cannot_fit_in_the_spool_is_refused_before_it_starts(
        tiny_diffusers, small_disk):
    w = WorkerProcess(tiny_diffusers, "--outputs", str(small_disk.path))
    try:
        w.client.wait_ready(timeout=300)
        events = w.client.generate(prompt="too big", seed=7, steps=4, width=1024, height=1024,
                                   count=4, preview_every=0)
        with pytest.raises(SpoolFull) as caught:
            next(events)  # the refusal comes first: no step was taken
        assert "MiB free" in str(caught.value) and "4 image(s)" in str(caught.value)
        assert w.client.info()["busy"] is None and spooled(small_disk.path) == []
    finally:
        w.stop()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x02 not a dict"])
def test_a_corrupt_checkpoint_is_model_invalid_naming_the_file(tmp_path, content):
    bad = tmp_path / "sd-v1-4.ckpt"
    bad.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "sdtui.worker", "--model", str(bad)],
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    (line,) = proc.stdout.splitlines()
    ev = json.loads(line)
    assert ev["type"] == "error" and ev["code"] == "model_invalid" and ev["id"] is None
    assert str(bad) in ev["message"]
