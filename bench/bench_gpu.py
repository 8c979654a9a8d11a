"""Generation speed on a GPU, side by side in one process: the worker's path (sampling loop with
its callback, sdtui's own VAE decode, PNG, base64, the JSON line) against a bare diffusers
pipeline call, for full-size random-weight models in the files people run:

    family          file(s)                                             size   steps
    sd1             SD 1.5 single file, float16                         512²   20
    sdxl            SDXL base single file, float16                      1024²  20
    flux1-schnell   FLUX.1 [schnell] Q8_0 GGUF + CLIP-L, T5-XXL fp8, ae   1024²  4
    flux1-dev       FLUX.1 [dev] Q4_K_S GGUF + CLIP-L, T5-XXL fp8, ae     1024²  20
    sd35-medium     sd3.5_medium.safetensors (CLIP-L, CLIP-G, VAE; no T5) 1024²  28
    klein-4b        FLUX.2 [klein] 4B diffusers folder                    1024²  4

    python bench/bench_gpu.py [--runs 3] [--steps N] [--families ...] [--keep DIR]
    python bench/bench_gpu.py --tiny --families ...   # the CPU path, test-sized (no figures)

Each row reports seconds per image and it/s for both paths, the peak VRAM (torch's allocator)
and the peak host RSS of the process, both from the model's load to its last image. Precision
is the worker's own choice for the device (float16 on a T4; bfloat16 for FLUX and Klein from
Ampere on).

Without a CUDA device (and without --tiny) it says so and exits 0 without measuring anything.
The weights are written on the machine that runs it (bench/full_size.py, and
sdtui.devtools.random_checkpoint for SD 1.5 and SDXL) under a temporary directory, deleted
afterwards, and loaded through sdtui's loader; the bare pipeline is that same diffusers
pipeline object. Runs are interleaved (bare, worker, bare, ...) and medians compared.
All six rows write about 50 GB in all, each row's files deleted before the next row's are
written (at most about 23 GB at once, the FLUX.1 [schnell] set). `--runs 1` is meant to fit a
10-minute slot on an H100: an estimate, not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import full_size
import torch
from scratch import reset_peak_rss, scratch_dir, status_kib

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
                dtype: torch.dtype | None = torch.float16,
                scheduler: str = "euler_a") -> dict[str, float]:
    """Median seconds per image, bare and through the worker, for the model at `path`, and the
    peaks (bytes) of VRAM and host RSS from its load to its last image. dtype None: the
    worker's own choice for the device and family."""
    from sdtui import protocol
    from sdtui.worker.models import load_model
    from sdtui.worker.sampling import Sampler
    from sdtui.worker.server import Worker

    cuda = device.startswith("cuda")

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()  # the RSS peak from here on
    started = time.perf_counter()
    model = load_model(str(path), device=device, dtype=dtype)
    load_seconds = time.perf_counter() - started
    sink = Sink()
    worker = Worker(Sampler(model), model.info(), sink)

    def generate() -> dict:
        return protocol.request("generate", id=f"g{time.monotonic_ns()}", prompt=PROMPT,
                                steps=steps, width=size, height=size, seed=7,
                                scheduler=scheduler, preview_every=0)

    def bare() -> None:
        worker.sampler.use_scheduler(scheduler)
        # As diffusers leaves it: the worker keeps an upcast VAE (SDXL's; FLUX's in float16)
        # in float32, and diffusers' pipelines decode with the VAE in the denoiser's dtype.
        vae_dtype = model.pipe.vae.dtype
        model.pipe.vae.to(model.denoiser.dtype)
        model.pipe(prompt=PROMPT, num_inference_steps=steps, width=size, height=size,
                   guidance_scale=worker.sampler._guidance_scale(
                       protocol.with_model_defaults(model.info(), generate())),
                   generator=torch.Generator("cpu").manual_seed(7), output_type="pil")
        model.pipe.vae.to(vae_dtype)

    def through_worker() -> None:
        worker.run_generate(generate())
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
    result["peak_vram"] = torch.cuda.max_memory_allocated() if cuda else 0
    result["peak_rss"] = status_kib("VmHWM:") * 1024
    return result


@dataclass(frozen=True)
class Row:
    size: int
    steps: int
    scheduler: str
    # Writes the model under the folder (test-sized with tiny=True); returns what --model takes.
    write: Callable[[Path, bool], Path]
    dtype: torch.dtype | None = None  # None: the worker's own choice


def _unet_file(family: str) -> Callable[[Path, bool], Path]:
    def write(folder: Path, tiny: bool) -> Path:
        from sdtui.devtools.random_checkpoint import write_random_checkpoint
        from sdtui.devtools.tiny_model import write_tiny_model

        if tiny:
            return write_tiny_model(folder / f"{family}-tiny.safetensors", "safetensors",
                                    family=family)
        path = folder / f"{family}-random-fp16.safetensors"
        return path if path.exists() else write_random_checkpoint(path, family, torch.float16)
    return write


ROWS = {
    "sd1": Row(512, 20, "euler_a", _unet_file("sd1"), torch.float16),
    "sdxl": Row(1024, 20, "euler_a", _unet_file("sdxl"), torch.float16),
    "flux1-schnell": Row(1024, 4, "euler", lambda folder, tiny: full_size.write_flux1_set(
        folder / "flux1-schnell", "schnell", "Q8_0", tiny)),
    "flux1-dev": Row(1024, 20, "euler", lambda folder, tiny: full_size.write_flux1_set(
        folder / "flux1-dev", "dev", "Q4_K_S", tiny)),
    "sd35-medium": Row(1024, 28, "euler", lambda folder, tiny: full_size.write_sd35_medium(
        folder / "sd3.5_medium.safetensors", tiny)),
    "klein-4b": Row(1024, 4, "euler", lambda folder, tiny: full_size.write_klein_4b(
        folder / "flux2-klein-4b", tiny)),
}
TINY = {"size": 64, "steps": 2}  # --tiny: the CPU path at the smallest size


def run_row(family: str, folder: Path, runs: int, steps: int | None = None,
            tiny: bool = False, keep: bool = True) -> str:
    """One family's line: its model written under `folder`, loaded, timed (then its files
    removed unless `keep`)."""
    row = ROWS[family]
    path = row.write(folder, tiny)
    size, steps = (TINY["size"], TINY["steps"]) if tiny else (row.size, steps or row.steps)
    device, dtype = ("cpu", torch.float32) if tiny else ("cuda", row.dtype)
    r = bench_model(path, size, steps, runs, device=device, dtype=dtype,
                    scheduler=row.scheduler)
    if not keep:
        full_size.remove(path.parent if path.suffix == ".gguf" else path)
    if device == "cuda":
        torch.cuda.empty_cache()  # the model is gone with bench_model's frame
    return (f"{family} {size}x{size} {steps} steps (loaded in {r['load']:.1f} s): "
            f"bare {steps / r['bare']:.2f} it/s, {r['bare']:.2f} s/image; "
            f"worker {steps / r['worker']:.2f} it/s, {r['worker']:.2f} s/image; "
            f"overhead x{r['worker'] / r['bare']:.3f}; peak VRAM {r['peak_vram'] / 2**30:.2f} "
            f"GiB, peak host RSS {r['peak_rss'] / 2**30:.2f} GiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, help="every row's steps (default: each row's own)")
    parser.add_argument("--families", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--keep", type=Path, help="write (or reuse) the weights here, keep them")
    parser.add_argument("--tiny", action="store_true",
                        help="test-sized models on the CPU at 64x64, 2 steps (checks the bench "
                             "runs; no figures)")
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("bench_gpu: SKIPPED: no CUDA device (torch.cuda.is_available() is False). Run "
              "it unchanged on a machine with an NVIDIA GPU (a g4dn's T4 runs SD 1.5, SDXL and "
              "the quantized FLUX.1; an H100 runs every row).")
        return 0
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random
    device = "CPU (--tiny)" if args.tiny else torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}, median of {args.runs} interleaved runs")
    with scratch_dir(args.keep, "sdtui-bench-gpu-") as folder:
        for family in args.families:
            print(run_row(family, folder, args.runs, args.steps, args.tiny,
                          keep=args.keep is not None), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
