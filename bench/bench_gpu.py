"""Generation speed on a GPU, side by side in one process: the worker's path (sampling loop with
its callback, sdtui's own VAE decode, PNG, base64, the JSON line) against a bare diffusers
pipeline call, for full-size random-weight SD 1.5 at 512x512 and SDXL at 1024x1024, 20 steps,
float16.

    python bench/bench_gpu.py [--runs 3] [--steps 20] [--families sd1 sdxl] [--keep DIR]

Without a CUDA device it says so and exits 0 without measuring anything. The weights are
written with sdtui.devtools.random_checkpoint (float16, the released single-file layout) under
a temporary directory, deleted afterwards, and loaded through sdtui's loader; the bare pipeline
is that same diffusers pipeline object. Runs are interleaved (bare, worker, bare, ...) and
medians compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from scratch import scratch_dir

SIZES = {"sd1": 512, "sdxl": 1024}
PROMPT = "a lighthouse on a cliff at dusk, dramatic sky"


class Sink:
    """The worker's stdout: keeps the last event, so a failed generation is never timed as one."""

    def __init__(self) -> None:
        self.last: dict = {}

    def write(self, data: bytes) -> int:
        self.last = json.loads(data.decode().strip().splitlines()[-1])
        return len(data)

    def flush(self) -> None:
        pass


def bench_model(path: Path, size: int, steps: int, runs: int, device: str = "cuda",
                dtype: torch.dtype = torch.float16) -> dict[str, float]:
    """Median seconds per image, bare and through the worker, for the model at `path`."""
    from sdtui import protocol
    from sdtui.worker.models import load_model
    from sdtui.worker.sampling import Sampler
    from sdtui.worker.server import Worker

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    started = time.perf_counter()
    model = load_model(str(path), device=device, dtype=dtype)
    load_seconds = time.perf_counter() - started
    sink = Sink()
    worker = Worker(Sampler(model), model.info(), sink)

    def bare() -> None:
        worker.sampler.use_scheduler("euler_a")
        # As diffusers leaves it: the worker keeps an upcast SDXL VAE in float32, and
        # diffusers' SDXL pipeline decodes float16 latents only with a float16 VAE.
        vae_dtype = model.pipe.vae.dtype
        model.pipe.vae.to(model.pipe.unet.dtype)
        model.pipe(prompt=PROMPT, num_inference_steps=steps, width=size, height=size,
                   generator=torch.Generator("cpu").manual_seed(7), output_type="pil")
        model.pipe.vae.to(vae_dtype)

    def through_worker() -> None:
        worker.run_generate(protocol.request(
            "generate", id=f"g{time.monotonic_ns()}", prompt=PROMPT, steps=steps, width=size,
            height=size, seed=7, scheduler="euler_a", preview_every=0))
        if sink.last.get("type") != "done" or sink.last.get("images") != 1:
            raise SystemExit(f"bench_gpu: the worker did not make the image: {sink.last}")

    cases = {"bare": bare, "worker": through_worker}
    for fn in cases.values():  # warm-up: kernels, cuDNN autotuning, the scheduler cache
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            synchronize()
            t = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - t)
    result = {name: statistics.median(ts) for name, ts in times.items()}
    result["load"] = load_seconds
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--keep", type=Path, help="write (or reuse) the weights here, keep them")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: SKIPPED: no CUDA device (torch.cuda.is_available() is False). Run "
              "it unchanged on a machine with an NVIDIA GPU (a g4dn's T4 runs both).")
        return 0
    from sdtui.devtools.random_checkpoint import write_random_checkpoint

    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, float16, "
          f"{args.steps} steps, euler_a, median of {args.runs} interleaved runs")
    with scratch_dir(args.keep, "sdtui-bench-gpu-") as folder:
        for family in args.families:
            path = folder / f"{family}-random-fp16.safetensors"
            if not path.exists():
                write_random_checkpoint(path, family, torch.float16)
            size = SIZES[family]
            r = bench_model(path, size, args.steps, args.runs)
            torch.cuda.empty_cache()  # the model is gone with bench_model's frame
            print(f"{family} {size}x{size} (loaded in {r['load']:.1f} s): "
                  f"bare {args.steps / r['bare']:.2f} it/s, {r['bare']:.2f} s/image; "
                  f"worker {args.steps / r['worker']:.2f} it/s, {r['worker']:.2f} s/image; "
                  f"overhead x{r['worker'] / r['bare']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
