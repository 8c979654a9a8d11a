"""`sdtui serve`'s costs, side by side in one run (issue 22's speed targets).

1. The API's overhead over `--no-ui` for the same request: a POST /sdapi/v1/txt2img to a
   running `sdtui serve` (HTTP, A1111's body translated, the image saved, base64 and JSON back)
   against what `sdtui --no-ui` runs for each prompt once attached (Session.generate: the image
   saved to the same outputs), on one worker, interleaved; medians compared. Goal: <= 3% at
   256x256 with the tiny model.
2. The time from a GET /sdapi/v1/progress to its answer while a generation runs, each on a
   fresh connection as A1111 clients poll. Goal: p95 < 50 ms.

Needs a Docker engine and the base image.  Usage:
  python bench/bench_serve.py [--base-image sdtui-base:offline] [--runs 5] [--steps 20]
                              [--size 256] [--polls 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from sdtui.deploy.local import LocalDeployment
from sdtui.deploy.local_settings import LocalSettings
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.session import Session


def start_server(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("serving ") and " at http://" in line:
            # Keep reading its log, so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, line.split(" at ", 1)[1].split(" ", 1)[0]
    sys.exit(f"sdtui serve failed: {argv}")


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-image", default="sdtui-base:offline")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--polls", type=int, default=200)
    ap.add_argument("--model", type=Path, help="a tiny .ckpt (default: one written here)")
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:6]
    name, volume = f"bench-{tag}", f"sdtui-bench-{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_tiny_model(Path(tmp) / "tiny.ckpt", "ckpt")
        out = Path(tmp) / "out"
        env = {**os.environ, "SDTUI_STATE_DIR": f"{tmp}/state", "SDTUI_CONFIG_DIR": f"{tmp}/cfg"}
        create = subprocess.run(
            [sys.executable, "-m", "sdtui", "--no-ui", "--name", name, "--volume", volume,
             "--base-image", args.base_image, "--model", str(model), "--prompt", "warm-up",
             "--steps", "2", "--width", "64", "--height", "64", "--out", str(out)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        os.environ.update(env)
        deployment = LocalDeployment(LocalSettings(models=[model], name=name, volume=volume,
                                                   base_image=args.base_image))
        server = None
        try:
            if create.returncode != 0:
                sys.exit(f"sdtui --no-ui failed: {create.stderr[-2000:]}")
            server, url = start_server(
                [sys.executable, "-m", "sdtui", "serve", "--name", name, "--port", "0",
                 "--out", str(out)], env)
            session = Session(deployment.connect(), out, name, who="bench")
            params = dict(prompt="a lighthouse at dusk", steps=args.steps, width=args.size,
                          height=args.size, seed=3, scheduler="euler_a", preview_every=0,
                          count=1)
            body = {"prompt": params["prompt"], "steps": args.steps, "width": args.size,
                    "height": args.size, "seed": 3, "sampler_name": "Euler a", "batch_size": 1}

            def no_ui() -> None:
                session.generate(params)

            def api() -> None:
                r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=600)
                if r.status_code != 200:
                    sys.exit(f"txt2img answered {r.status_code}: {r.text[:500]}")

            times: dict[str, list[float]] = {"--no-ui": [], "api": []}
            for fn in (no_ui, api):
                fn()  # warm-up
            for _ in range(args.runs):
                for label, fn in (("--no-ui", no_ui), ("api", api)):
                    t = time.perf_counter()
                    fn()
                    times[label].append(time.perf_counter() - t)
            a, b = (statistics.median(times[k]) for k in ("--no-ui", "api"))
            print(f"{args.size}x{args.size}, {args.steps} steps, {args.runs} interleaved runs: "
                  f"--no-ui {a * 1000:.0f} ms, api {b * 1000:.0f} ms (overhead {b / a - 1:+.1%}; "
                  "goal <= 3%)")

            # Polls while one long request runs (its answer is not timed).
            running = threading.Thread(target=lambda: requests.post(
                f"{url}/sdapi/v1/txt2img", json={**body, "steps": max(args.steps, 20) * 5},
                timeout=600))
            running.start()
            while requests.get(f"{url}/sdapi/v1/progress", timeout=60).json()[
                    "state"]["job_count"] == 0 and running.is_alive():
                pass
            latencies = []
            while len(latencies) < args.polls and running.is_alive():
                t = time.perf_counter()
                requests.get(f"{url}/sdapi/v1/progress", timeout=60).json()
                latencies.append(time.perf_counter() - t)
            requests.post(f"{url}/sdapi/v1/interrupt", timeout=60)
            running.join()
            print(f"progress while generating, {len(latencies)} polls: median "
                  f"{statistics.median(latencies) * 1000:.1f} ms, p95 "
                  f"{p95(latencies) * 1000:.1f} ms (goal < 50 ms)")
            session.close()
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=60)
            deployment.teardown(lambda ev: None, purge=True)


if __name__ == "__main__":
    main()
