"""Speed of the app: `sdtui` to its first frame, and key press to screen update while a
generation runs (Pilot, against a real worker process with the tiny model).

    python bench/bench_tui.py [--model DIR] [--presses 40]

The generation must outlast the key presses on any machine: the bench first times a sampling
step of the worker, then sizes the batch (steps, and image size if need be) to run at least
twice as long as the presses take. A key's latency runs from the press to the first frame the
app draws that shows the typed character.

Prints each figure next to its target and the ratio (figure / target; below 1 meets it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST_FRAME_TARGET_S = 1.0
KEY_MEDIAN_TARGET_MS = 100.0
KEY_P95_TARGET_MS = 250.0
ENV_OF = {"state": "SDTUI_STATE_DIR", "config": "SDTUI_CONFIG_DIR", "out": "SDTUI_OUTPUTS_DIR"}


def first_frame_seconds(model: Path, tmp: Path, protocol: str, runs: int = 3) -> float:
    """From starting `sdtui` in tmux until its first screen is on the terminal.
    protocol "auto" lets textual-image probe the terminal before the app starts."""
    exe = Path(sys.executable).with_name("sdtui")
    tmux = ["tmux", "-L", f"sdtui-bench-{os.getpid()}"]  # a tmux server of our own
    times = []
    for i in range(runs):
        session = f"sdtui-bench-{i}"
        env = (f"SDTUI_STATE_DIR={tmp}/state SDTUI_CONFIG_DIR={tmp}/config "
               f"SDTUI_OUTPUTS_DIR={tmp}/out SDTUI_IMAGE_PROTOCOL={protocol}")
        time.sleep(0.3)  # let the previous run's app exit
        start = time.monotonic()
        subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                        f"env {env} {exe} --model {model}"], check=True)
        try:
            while "Provision" not in subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", session],
                    capture_output=True, text=True).stdout:
                if time.monotonic() - start > 30:
                    raise RuntimeError("no first frame within 30 s")
                time.sleep(0.005)
            times.append(time.monotonic() - start)
        finally:
            subprocess.run([*tmux, "kill-session", "-t", session], check=False)
    subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
    return statistics.median(times)


PACE_S = 0.05  # between presses, as a typist's keys come
MAX_STEPS, MAX_COUNT = 150, 16  # the protocol's limits


def step_seconds(client: object, width: int, steps: int = 12) -> float:
    """The worker's time per sampling step at width×width, from its own progress events."""
    times = []
    for ev in client.generate(prompt="probe", steps=steps, width=width,  # type: ignore
                              height=width, seed=1, preview_every=0):
        if ev["type"] == "progress":
            times.append(time.perf_counter())
        elif ev["type"] == "image":
            client.ack(ev["id"], ev["index"])  # type: ignore[attr-defined]  # not kept
    return (times[-1] - times[0]) / max(len(times) - 1, 1)


def long_enough(client: object, seconds: float) -> dict[str, int]:
    """A request that samples for at least `seconds` on this machine: the fewest steps of a
    16-image batch at the smallest size that can last that long."""
    for width in (64, 128, 256, 512):
        per_step = step_seconds(client, width)
        if MAX_STEPS * MAX_COUNT * per_step >= seconds:
            steps = min(MAX_STEPS, max(10, int(seconds / (MAX_COUNT * per_step)) + 1))
            return {"steps": steps, "count": MAX_COUNT, "width": width, "height": width}
    return {"steps": MAX_STEPS, "count": MAX_COUNT, "width": 512, "height": 512}


async def key_latencies_ms(model: Path, tmp: Path, presses: int) -> tuple[list[float], dict]:
    from textual.widgets import Input, TextArea

    from sdtui.ui.app import SdtuiApp
    from tests.ui.conftest import fake_services
    from tests.ui.fakes import FakeDeployment
    from tests.ui.worker_relay import SubprocessWorker

    worker = SubprocessWorker(model, tmp / "worker.log")
    probe = worker.attach()
    probe.wait_ready(timeout=300)
    # Twice what the presses should take, and a margin for starting the batch.
    request = long_enough(probe, 2 * presses * (PACE_S + 0.15) + 10)
    probe.close()
    app = SdtuiApp(fake_services(FakeDeployment(worker, name="bench"), tmp / "out",
                                 models=str(model)))
    drawn: list[tuple[float, int]] = []  # (when, prompt length) of each frame the app draws
    latencies: list[float] = []
    async with app.run_test(size=(140, 45)) as pilot:
        real_display = app._display

        def display(screen: object, renderable: object) -> None:
            if renderable is not None and type(app.screen).__name__ == "PromptScreen":
                drawn.append((time.perf_counter(), len(app.screen.query_one("#prompt").text)))
            real_display(screen, renderable)  # type: ignore[arg-type]

        app._display = display  # type: ignore[method-assign]
        await pilot.press("ctrl+s")
        while type(app.screen).__name__ != "PromptScreen":
            await pilot.pause(0.05)
        await pilot.pause()
        screen = app.screen
        prompt = screen.query_one("#prompt", TextArea)
        prompt.text = "latency"
        for name, value in request.items():
            screen.query_one(f"#{name}", Input).value = str(value)
        await pilot.press("ctrl+g")
        while "step" not in str(screen.query_one("#gen-status").render()):
            await pilot.pause(0.05)
        prompt.focus()
        for _ in range(presses):
            before = len(prompt.text)
            start = time.perf_counter()
            await pilot.press("x")
            while not any(when >= start and length > before for when, length in drawn):
                await asyncio.sleep(0.001)
            shown = min(when for when, length in drawn if when >= start and length > before)
            latencies.append((shown - start) * 1000)
            await pilot.pause(PACE_S)
        still = screen.generating
        await pilot.press("escape")
        while screen.generating:
            await pilot.pause(0.05)
    worker.stop()
    if not still:
        raise RuntimeError("the generation ended before the measurement: the step time "
                           "changed while measuring; run again")
    return latencies, request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="a diffusers folder (default: a tiny one)")
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--frames", type=int, default=3,
                        help="first frames timed per protocol (their median is printed)")
    parser.add_argument("--first-frame-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for sub in ("state", "config", "out"):
            (tmp / sub).mkdir()
            os.environ[ENV_OF[sub]] = str(tmp / sub)
        os.environ["SDTUI_IMAGE_PROTOCOL"] = "halfcell"
        model = args.model
        if model is None:
            model = tmp / "tiny"
            subprocess.run([sys.executable, "-m", "sdtui.devtools.tiny_model", str(model),
                            "--format", "diffusers"], check=True, capture_output=True)
        frame = first_frame_seconds(model, tmp, "halfcell", args.frames)
        frame_auto = first_frame_seconds(model, tmp, "auto", args.frames)
        for label, seconds in (("halfcell forced", frame), ("auto-detected", frame_auto)):
            print(f"first frame ({label}; tmux, median of {args.frames}): {seconds:.3f} s   target "
                  f"{FIRST_FRAME_TARGET_S} s   ratio {seconds / FIRST_FRAME_TARGET_S:.2f}")
        if args.first_frame_only:
            return
        latencies, request = asyncio.run(key_latencies_ms(model, tmp, args.presses))
        lat = sorted(latencies)
    print(f"generation during the presses: {request['count']} images × {request['steps']} "
          f"steps at {request['width']}×{request['height']} (sized from a timed step)")
    median = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * len(lat))) - 1)]
    print(f"key → update while generating:   median {median:.1f} ms   target "
          f"{KEY_MEDIAN_TARGET_MS:.0f} ms   ratio {median / KEY_MEDIAN_TARGET_MS:.2f}")
    print(f"                                 p95 {p95:.1f} ms      target "
          f"{KEY_P95_TARGET_MS:.0f} ms   ratio {p95 / KEY_P95_TARGET_MS:.2f}   (n={len(lat)})")


if __name__ == "__main__":
    main()
