"""Worker overhead, side by side in one run (issue 2's speed targets).

  A  bare diffusers pipeline call (PIL image out)
  B  the same request through the worker in-process: protocol, sampling loop, VAE decode,
     PNG encoding, base64, JSON line (previews off)
  C  B with a preview every step

Runs are interleaved (A B C A B C ...) so drift hits all three alike; medians are compared.
Also times `sdtui --help`.  Usage: python bench/bench_worker.py [--runs 7] [--size 64 256]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sdtui import protocol
from sdtui.devtools.tiny_model import write_tiny_model
from sdtui.worker.models import load_model
from sdtui.worker.sampling import Sampler
from sdtui.worker.server import Worker


class Sink:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def bench_size(model, size: int, steps: int, runs: int) -> dict[str, float]:
    pipe = model.pipe
    worker = Worker(Sampler(model), {"model": model.path}, Sink())
    params = dict(prompt="a lighthouse at dusk", steps=steps, width=size, height=size, seed=7,
                  scheduler="euler_a")

    def bare() -> None:
        worker.sampler.use_scheduler("euler_a")
        pipe(prompt=params["prompt"], num_inference_steps=steps, width=size, height=size,
             generator=torch.Generator("cpu").manual_seed(7), output_type="pil")

    def through_worker(every: int) -> None:
        req = protocol.request("generate", id=f"b{time.monotonic_ns()}", preview_every=every,
                               **params)
        worker.run_generate(req)

    cases = {"bare": bare, "worker": lambda: through_worker(0),
             "worker+previews": lambda: through_worker(1)}
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def help_time(runs: int) -> float:
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sdtui", "--help"], check=True,
                       stdout=subprocess.DEVNULL)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--model", type=Path, help="a tiny diffusers folder (default: one written "
                    "here)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or write_tiny_model(Path(tmp) / "tiny", "diffusers")
        model = load_model(str(path))
        print(f"torch threads {torch.get_num_threads()}, {args.runs} interleaved runs, "
              f"{args.steps} steps")
        for size in args.size:
            m = bench_size(model, size, args.steps, args.runs)
            print(f"{size}x{size}: bare {m['bare'] * 1000:.0f} ms, "
                  f"worker {m['worker'] * 1000:.0f} ms ({m['worker'] / m['bare'] - 1:+.1%}), "
                  f"previews every step {m['worker+previews'] * 1000:.0f} ms "
                  f"({m['worker+previews'] / m['worker'] - 1:+.1%} vs worker)")
    print(f"sdtui --help: {help_time(args.runs) * 1000:.0f} ms (median)")


if __name__ == "__main__":
    main()
