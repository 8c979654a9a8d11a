"""Option B's costs, side by side in one run (issue 3's speed targets).

1. Time to `ready`: a first `sdtui --no-ui` run on a fresh deployment (volume, copy, container,
   model load; the image may already be cached) against a second run on the same deployment
   (which must reattach without rebuilding, copying or reloading).
2. Generation through the container and the attach stream (client → Docker socket → worker →
   PNG + base64 → client) against the same pipeline called in-process with the same model and
   parameters. Runs are interleaved; medians are compared.

Needs a Docker engine and the base image.  Usage:
  python bench/bench_container.py [--base-image sdtui-base:offline] [--runs 5] [--size 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import torch

from sdtui import protocol
from sdtui.deploy.local import LocalDeployment, LocalSettings
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.worker.models import load_model
from sdtui.worker.sampling import Sampler


def time_to_ready(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, str]]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    outcomes: dict[str, str] = {}
    ready_at = None
    for line in proc.stdout:
        ev = json.loads(line)
        if ev.get("event") == "step_finished":
            outcomes[ev["step"]] = ev["outcome"]
            if ev["step"] == "attach":
                ready_at = time.perf_counter() - started
    if proc.wait() != 0 or ready_at is None:
        sys.exit(f"sdtui failed: {argv}")
    return ready_at, outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-image", default="sdtui-base:offline")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--model", type=Path, help="a tiny .ckpt (default: one written here)")
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:6]
    name, volume = f"bench-{tag}", f"sdtui-bench-{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_tiny_model(Path(tmp) / "tiny.ckpt", "ckpt")
        env = {**os.environ, "SDTUI_STATE_DIR": f"{tmp}/state", "SDTUI_CONFIG_DIR": f"{tmp}/cfg"}
        argv = [sys.executable, "-m", "sdtui", "--no-ui", "--json", "--name", name, "--volume",
                volume, "--base-image", args.base_image, "--model", str(model)]
        first, first_steps = time_to_ready(argv, env)
        second, second_steps = time_to_ready(argv, env)
        print(f"time to ready: first run {first:.1f} s "
              f"(image {first_steps['image']}), second run {second:.1f} s "
              f"({second / first:.2f}x; skipped: "
              f"{', '.join(s for s, o in second_steps.items() if o == 'skipped')})")

        os.environ.update(env)
        deployment = LocalDeployment(LocalSettings(models=[model], name=name, volume=volume,
                                                   base_image=args.base_image))
        try:
            client = deployment.connect()
            sampler = Sampler(load_model(str(model)))
            print(f"in-process torch threads {torch.get_num_threads()}, {args.runs} interleaved "
                  f"runs, {args.steps} steps")
            for size in args.size:
                params = dict(prompt="a lighthouse at dusk", steps=args.steps, width=size,
                              height=size, seed=3, scheduler="euler_a", preview_every=0, count=1)

                def in_process(params: dict = params) -> None:
                    sampler.run(protocol.request("generate", id="b", **params),
                                lambda kind, fields: None, threading.Event())

                def container(params: dict = params) -> None:
                    for _ in client.generate(**params):
                        pass

                times: dict[str, list[float]] = {"in-process": [], "container": []}
                for fn in (in_process, container):
                    fn()  # warm-up
                for _ in range(args.runs):
                    for label, fn in (("in-process", in_process), ("container", container)):
                        t = time.perf_counter()
                        fn()
                        times[label].append(time.perf_counter() - t)
                a, b = (statistics.median(times[k]) for k in ("in-process", "container"))
                print(f"{size}x{size}: in-process {a * 1000:.0f} ms, container {b * 1000:.0f} ms "
                      f"({b / a - 1:+.1%})")
            for ev in client.fetch():
                client.ack(ev["id"])
            client.close()
        finally:
            deployment.teardown(lambda ev: None, purge=True)


if __name__ == "__main__":
    main()
