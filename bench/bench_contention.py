"""CPU generation beside another busy process, side by side in one run: the worker's OpenMP
wait policy (PASSIVE, set by `python -m sdtui.worker` before torch is imported) against the
OpenMP runtime's default, each in a fresh process, quiet and then beside one busy loop
(`python3 -c 'while True: pass'`, as issue 19 runs the suite beside).

Each process loads the model with the worker's loader and runs the same request through the
worker in-process (previews off), once to warm up, then --runs times quiet and --runs times
beside the loop; medians are compared.

    python bench/bench_contention.py [--runs 3] [--steps 20] [--size 128] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True: pass"
POLICIES = {"default": None, "passive": "PASSIVE"}


def child(model: Path, steps: int, size: int, runs: int) -> dict[str, float]:
    """In the process being measured: torch is imported here, after the policy is set."""
    from bench_worker import Sink

    from sdtui import protocol
    from sdtui.worker.models import load_model
    from sdtui.worker.sampling import Sampler
    from sdtui.worker.server import Worker

    worker = Worker(Sampler(load_model(str(model))), {"model": str(model)}, Sink())

    def generate() -> float:
        started = time.perf_counter()
        worker.run_generate(protocol.request(
            "generate", id=f"c{time.monotonic_ns()}", prompt="a lighthouse at dusk", steps=steps,
            width=size, height=size, seed=7, preview_every=0))
        return time.perf_counter() - started

    generate()  # warm-up
    quiet = [generate() for _ in range(runs)]
    loop = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        busy = [generate() for _ in range(runs)]
    finally:
        loop.kill()
        loop.wait()
    return {"quiet": statistics.median(quiet), "busy": statistics.median(busy)}


def measure(policy: str | None, model: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--child", str(model), "--runs",
                          str(args.runs), "--steps", str(args.steps), "--size", str(args.size)],
                         env=env, cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--model", type=Path, help="a tiny diffusers folder (default: one written "
                    "here)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.size, args.runs)))
        return
    from sdtui.devtools.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_tiny_model(Path(tmp) / "tiny", "diffusers")
        print(f"{os.cpu_count()} CPUs, {args.size}x{args.size}, {args.steps} steps, median of "
              f"{args.runs} per cell, each policy in a fresh process")
        found = {name: measure(policy, model, args) for name, policy in POLICIES.items()}
    for name, m in found.items():
        print(f"{name:8} quiet {m['quiet'] * 1000:7.0f} ms   beside a busy loop "
              f"{m['busy'] * 1000:7.0f} ms ({m['busy'] / m['quiet']:.2f}x quiet)")
    ratio = found["passive"]["busy"] / found["default"]["busy"]
    quiet = found["passive"]["quiet"] / found["default"]["quiet"]
    print(f"passive/default: beside a busy loop {ratio:.2f}x, quiet {quiet:.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
