"""Face restoration and upscaling cost next to the generation they follow (issue 6).

  G  a generation at SIZE x SIZE with the tiny SD model (the real x8 VAE), STEPS steps
  F  GFPGAN v1.3 face restoration of a SIZE x SIZE photograph with one face (real
     architecture, random weights)
  U  Real-ESRGAN xSCALE upscaling of the generated image (RRDBNet, 23 blocks, random weights)

Prints medians and the ratios F/G and U/G. Then the tiled upscaler's peak memory against an
untiled run, each in a fresh process (peak RSS).
Usage: python bench/bench_features.py [--size 512] [--steps 20] [--scale 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK_CHILD = """
import sys, torch
from pathlib import Path
from sdtui.worker.restorers import load_restorer
from sdtui.worker.upscale import upscale_tensor

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

model = load_restorer(Path(sys.argv[1]), "ESRGAN")
size, tile = int(sys.argv[2]), (None if sys.argv[3] == "none" else int(sys.argv[3]))
x = torch.rand(1, 3, size, size)
open("/proc/self/clear_refs", "w").write("5")  # resets the peak to what is resident now
base = hwm_kib()
with torch.inference_mode():
    upscale_tensor(model, x, tile)
print(base, hwm_kib())
"""


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", type=Path, help="a tiny diffusers folder (default: one "
                        "written here)")
    args = parser.parse_args()

    import skimage.data
    import torch
    from PIL import Image

    from sdtui.devtools.esrgan_weights import write_esrgan_weights
    from sdtui.devtools.gfpgan_weights import write_gfpgan_weights
    from sdtui.devtools.tiny_model import write_tiny_model
    from sdtui.worker.faces import restore_faces
    from sdtui.worker.models import load_model
    from sdtui.worker.restorers import load_restorer
    from sdtui.worker.upscale import upscale

    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = load_model(str(args.model or write_tiny_model(root / "tiny-sd", "diffusers",
                                                              seed=7)))
        esrgan_path = write_esrgan_weights(root / f"x{args.scale}.pth", scale=args.scale)
        esrgan = load_restorer(esrgan_path, "ESRGAN")
        gfpgan = load_restorer(write_gfpgan_weights(root / "GFPGANv1.3.pth"), "GFPGAN")
        photo = Image.fromarray(skimage.data.astronaut()).resize((args.size, args.size))
        generated: list[Image.Image] = []

        def generate() -> None:
            generated[:] = model.pipe(prompt="a portrait", num_inference_steps=args.steps,
                                      width=args.size, height=args.size,
                                      generator=torch.Generator().manual_seed(1)).images

        gen = median_seconds(generate, args.runs)
        face = median_seconds(lambda: restore_faces(photo, gfpgan, 1.0), args.runs)
        up = median_seconds(lambda: upscale(generated[0], esrgan, 1.0), args.runs)
        print(f"{args.size}x{args.size} on {torch.get_num_threads()} CPU threads, "
              f"median of {args.runs}")
        print(f"  G generation ({args.steps} steps, tiny model): {gen:8.2f} s")
        print(f"  F GFPGAN face restoration:               {face:8.2f} s  F/G = {face / gen:.2f}")
        print(f"  U Real-ESRGAN x{args.scale} (tiled):               {up:8.2f} s  "
              f"U/G = {up / gen:.2f}")

        print("peak memory of Real-ESRGAN upscaling (fresh process each, peak RSS):")
        for tile in ("192", "none"):
            out = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(esrgan_path),
                                  str(args.size), tile], capture_output=True, text=True,
                                 check=True).stdout.split()
            base, peak = (int(v) / 1024 for v in out)
            label = "tiled 192" if tile != "none" else "untiled  "
            print(f"  {label}: peak {peak:8.0f} MiB ({peak - base:+.0f} MiB over the loaded model)")


if __name__ == "__main__":
    main()
