"""Loading a full-size single-file checkpoint: sdtui's loader against diffusers'
`from_single_file`, side by side in one run (issue 11's memory target: peak RSS at most 1.2x
the file size).

    python bench/bench_load.py [--formats safetensors ckpt] [--keep DIR] [--tiny]

A random-weight SD 1.5-architecture checkpoint (1.07 B parameters, float32, 4.3 GB) is written
under a temporary directory with sdtui.devtools.random_checkpoint (the released layout, as the
tests write it), and deleted afterwards. Each loader runs in a fresh process on the CPU, with
the file in the page cache (read once just before); its peak RSS is the high-water mark from
after its imports until every weight has been touched once (diffusers maps a .safetensors file
and reads a weight when it is first used; sdtui reads it whole, sequentially, which is what
s3fs needs). Afterwards each process hashes every weight it loaded: the two loaders must agree
bit for bit (the full-size weight check).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from scratch import scratch_dir

REPO = Path(__file__).resolve().parents[1]

_LOAD = """
import hashlib, json, sys, time
from pathlib import Path
import torch
loader, path, config = sys.argv[1], sys.argv[2], sys.argv[3]
# Both loaders' imports before the clock starts (the worker imports them at startup).
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import single_file_utils
from transformers import CLIPTextModel, CLIPTokenizer
from sdtui.worker.models import load_model

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
before = kib("VmRSS:")
started = time.perf_counter()
if loader == "sdtui":
    pipe = load_model(path, device="cpu").pipe
else:
    pipe = StableDiffusionPipeline.from_single_file(
        path, config=config, local_files_only=True, safety_checker=None,
        requires_safety_checker=False)
seconds = time.perf_counter() - started
# A loader may map the file and read a weight only when it is first used: touch every weight
# once, as the first image would, before taking the peak.
with torch.inference_mode():
    for name in ("unet", "vae", "text_encoder"):
        for tensor in getattr(pipe, name).state_dict().values():
            tensor.sum()
touched = time.perf_counter() - started
peak = kib("VmHWM:") - before
digests = {}
for name in ("unet", "vae", "text_encoder"):
    digest = hashlib.sha256()
    for key, tensor in sorted(getattr(pipe, name).state_dict().items()):
        if key.endswith("position_ids"):
            continue
        digest.update(key.removeprefix("text_model.").encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests[name] = digest.hexdigest()
print(json.dumps({"seconds": seconds, "touched": touched, "peak_kib": peak,
                  "digests": digests}))
"""


def cache(path: Path) -> None:
    """Read the file once, so that each loader reads it from the page cache: otherwise the
    first one to run pays for the disk (and the comparison is of the disk, not the loaders)."""
    chunk = bytearray(64 * 2**20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(chunk):
            pass


def run_loader(loader: str, path: Path, config: Path) -> dict:
    cache(path)
    result = subprocess.run([sys.executable, "-c", _LOAD, loader, str(path), str(config)],
                            cwd=REPO,
                            capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    if result.returncode != 0:
        raise SystemExit(f"{loader} failed on {path}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_file(path: Path, tiny: bool) -> Path:
    """The checkpoint, and the diffusers config folder that describes it."""
    if tiny:
        subprocess.run([sys.executable, "-m", "sdtui.devtools.tiny_model", str(path),
                        "--format", path.suffix[1:]], cwd=REPO, check=True, capture_output=True)
    elif not path.exists():
        subprocess.run([sys.executable, "-m", "sdtui.devtools.random_checkpoint", str(path),
                        "--family", "sd1"], cwd=REPO, check=True, capture_output=True)
    from sdtui.worker.models import SD1_ASSETS

    return path.with_name(path.stem + ".config") if tiny else SD1_ASSETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", nargs="+", default=["safetensors", "ckpt"],
                        choices=["safetensors", "ckpt"])
    parser.add_argument("--keep", type=Path, help="write (or reuse) the files here, keep them")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny test model instead (checks the bench runs; no figures)")
    args = parser.parse_args()
    with scratch_dir(args.keep, "sdtui-bench-load-") as folder:
        print(f"{'format':<12} {'loader':<27} {'peak RSS':>9} {'x file':>7} {'load s':>7} "
              f"{'+touch s':>8}")
        for fmt in args.formats:
            path = folder / f"{'tiny' if args.tiny else 'sd15-random'}.{fmt}"
            config = write_file(path, args.tiny)
            size = path.stat().st_size
            results = {loader: run_loader(loader, path, config)
                       for loader in ("sdtui", "diffusers")}
            for loader, result in results.items():
                name = "sdtui" if loader == "sdtui" else "diffusers from_single_file"
                peak = result["peak_kib"] * 1024
                print(f"{fmt:<12} {name:<27} {peak / 2**30:>7.2f} G {peak / size:>7.2f} "
                      f"{result['seconds']:>7.1f} {result['touched']:>8.1f}")
            ours, theirs = results["sdtui"], results["diffusers"]
            same = ours["digests"] == theirs["digests"]
            print(f"{fmt:<12} file {size / 2**30:.2f} GiB; sdtui/diffusers: peak "
                  f"{ours['peak_kib'] / theirs['peak_kib']:.2f}x, time to every weight in "
                  f"memory {ours['touched'] / theirs['touched']:.2f}x; weights bit-identical: "
                  f"{'yes' if same else 'NO ' + str(ours['digests']) + str(theirs['digests'])}")


if __name__ == "__main__":
    main()
