"""Loading full-size model files on the CPU: sdtui's worker loader against diffusers' (or
transformers') own, side by side in one run, as peak RSS over the largest component file (the
memory goal: at most 1.2x, above the import baseline) and seconds.

    python bench/bench_load.py [--rows ROW ...] [--keep DIR] [--tiny]

Rows (random weights in the released shapes, written tensor by tensor under a temporary
directory and deleted after their row; bench/full_size.py for the newer families):

    row               file(s)                                   the other side
    sd15-safetensors  SD 1.5 single file, float32 (4.3 GB)      StableDiffusionPipeline
    sd15-ckpt         the same as a pickled .ckpt                 .from_single_file
    flux1-q4ks        FLUX.1 [dev] transformer, Q4_K_S GGUF     FluxTransformer2DModel
    flux1-q8          FLUX.1 [dev] transformer, Q8_0 GGUF         .from_single_file, bfloat16
    t5xxl-fp8         T5-XXL encoder, t5xxl_fp8_e4m3fn          T5EncoderModel.from_pretrained
    sd35-medium       SD 3.5 Medium MMDiT-X, float16            SD3Transformer2DModel(...)
    klein-4b          FLUX.2 [klein] 4B diffusers folder, bf16  Flux2KleinPipeline(...)

sdtui's side is the function its worker loads that component with (sdtui.worker.models.
load_model for SD 1.5 and Klein, which only load whole; flux_files.load_transformer,
flux_parts.t5_encoder and sd3_files.load_transformer for the parts of a FLUX.1 set or an SD 3.5
file), in the dtype the worker computes in on a GPU. The other side gets the same config
(derived from the file's shapes) and dtype. The Klein folder has the released transformer and VAE
and the test model's small text encoder (sdtui loads Klein whole, so its figure is the
pipeline's; Qwen3-4B would add its own 8 GB to both sides).

Each loader runs in a fresh process, with the file in the page cache (read once just before);
its peak RSS is the high-water mark from after its imports until every weight has been touched
once (a loader may map the file and read a weight only when first used). Afterwards each
process hashes every weight it loaded (its values in float32; quantized blocks as stored): the
two loaders must agree bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scratch import reset_peak_rss, scratch_dir, status_kib

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    what: str
    reference: str  # the other side's loader, as the table prints it
    # Writes the file(s) under the folder (tiny=True: the test models' shapes); returns the
    # path each loader is given and the largest component file.
    write: Callable[[Path, bool], tuple[Path, Path]]


def _sd15(fmt: str) -> Callable[[Path, bool], tuple[Path, Path]]:
    def write(folder: Path, tiny: bool) -> tuple[Path, Path]:
        path = folder / f"{'tiny' if tiny else 'sd15-random'}.{fmt}"
        if tiny:  # in this process, which --tiny loads in: no second start of torch
            from sdtui.devtools.tiny_model import write_tiny_model

            write_tiny_model(path, fmt)
        elif not path.exists():
            subprocess.run([sys.executable, "-m", "sdtui.devtools.random_checkpoint",
                            str(path), "--family", "sd1"], cwd=REPO, check=True,
                           capture_output=True)
        return path, path
    return write


def _flux1(qtype: str) -> Callable[[Path, bool], tuple[Path, Path]]:
    def write(folder: Path, tiny: bool) -> tuple[Path, Path]:
        import full_size
        import gguf

        path = folder / f"flux1-dev-{qtype}.gguf"
        if not path.exists():
            full_size.write_gguf(full_size.flux1_layout("dev", tiny), path,
                                 getattr(gguf.GGMLQuantizationType, qtype.removesuffix("_S")))
        return path, path
    return write


def _t5(folder: Path, tiny: bool) -> tuple[Path, Path]:
    import full_size

    path = folder / "t5xxl_fp8_e4m3fn.safetensors"
    if not path.exists():
        full_size.write_safetensors(full_size.t5_layout(tiny=tiny), path)
    return path, path


def _sd35(folder: Path, tiny: bool) -> tuple[Path, Path]:
    import full_size

    path = full_size.write_sd35_medium(folder / "sd3.5_medium.safetensors", tiny,
                                       transformer_only=True)
    return path, path


def _klein(folder: Path, tiny: bool) -> tuple[Path, Path]:
    import full_size

    path = full_size.write_klein_4b(folder / "flux2-klein-4b", tiny, qwen3=False)
    return path, max(path.rglob("*.safetensors"), key=lambda file: file.stat().st_size)


ROWS = {
    "sd15-safetensors": Row("SD 1.5 .safetensors f32", "from_single_file", _sd15("safetensors")),
    "sd15-ckpt": Row("SD 1.5 .ckpt f32", "from_single_file", _sd15("ckpt")),
    "flux1-q4ks": Row("FLUX.1 Q4_K_S .gguf", "from_single_file", _flux1("Q4_K_S")),
    "flux1-q8": Row("FLUX.1 Q8_0 .gguf", "from_single_file", _flux1("Q8_0")),
    "t5xxl-fp8": Row("T5-XXL fp8 .safetensors", "transformers from_pretrained", _t5),
    "sd35-medium": Row("SD 3.5 Medium MMDiT f16", "from_single_file", _sd35),
    "klein-4b": Row("Klein 4B folder bf16", "from_pretrained", _klein),
}


# --- the child process: one loader, one row --------------------------------------------------

def _reference_config(path: Path, config: dict, name: str) -> Path:
    """A folder holding `name`/config.json, as diffusers' from_single_file takes one offline."""
    folder = path.with_name(path.name + f".{os.getpid()}.ref")
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "config.json").write_text(json.dumps(config))
    return folder


def load(row: str, loader: str, path: Path) -> dict:
    """What `loader` ("sdtui" or "reference") loads for `row` from `path`: its modules by
    name."""
    import torch

    if row.startswith("sd15"):
        if loader == "sdtui":
            from sdtui.worker.models import load_model

            pipe = load_model(str(path), device="cpu").pipe
        else:
            from diffusers import StableDiffusionPipeline

            from sdtui.worker.models import SD1_ASSETS

            config = path.with_name(path.stem + ".config") if "tiny" in path.name else SD1_ASSETS
            pipe = StableDiffusionPipeline.from_single_file(
                path, config=str(config), local_files_only=True, safety_checker=None,
                requires_safety_checker=False)
        return {name: getattr(pipe, name) for name in ("unet", "vae", "text_encoder")}
    if row.startswith("flux1"):
        from sdtui.worker import flux_files

        if loader == "sdtui":
            return {"transformer": flux_files.load_transformer(path, torch.bfloat16, "gguf")}
        from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

        from sdtui.worker.gguf_files import read_architecture

        shapes = read_architecture(path, "flux", "FLUX.1", "FLUX.1")
        base = json.loads(flux_files.CONFIG.read_text())
        config = {**base, **flux_files.transformer_config(path, shapes, base)}
        folder = _reference_config(path, config, "transformer")
        width = flux_files.shapes_width(shapes)
        if width != flux_files.FLUX1_WIDTH:  # a test-sized transformer: see converter()
            from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

            SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"]["checkpoint_mapping_fn"] = (
                flux_files.converter(width))
        return {"transformer": FluxTransformer2DModel.from_single_file(
            str(path), config=str(folder), subfolder="transformer", local_files_only=True,
            torch_dtype=torch.bfloat16,
            quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16))}
    if row == "t5xxl-fp8":
        from sdtui.worker.checkpoint import Checkpoint
        from sdtui.worker.flux_parts import t5_config, t5_encoder

        if loader == "sdtui":
            return {"t5": t5_encoder(path, torch.bfloat16)}
        from transformers import T5Config, T5EncoderModel

        folder = path.with_name(path.name + f".{os.getpid()}.ref")
        folder.mkdir(exist_ok=True)
        T5Config(**t5_config(path, Checkpoint(path, "safetensors").shapes)).save_pretrained(
            folder)
        os.link(path, folder / "model.safetensors")
        return {"t5": T5EncoderModel.from_pretrained(folder, dtype=torch.bfloat16).eval()}
    if row == "sd35-medium":
        from sdtui.worker import sd3_files
        from sdtui.worker.checkpoint import Checkpoint

        if loader == "sdtui":
            return {"transformer": sd3_files.load_transformer(path, torch.float16)}
        from diffusers import SD3Transformer2DModel

        shapes = {key.removeprefix(sd3_files.PREFIX): shape
                  for key, shape in Checkpoint(path, "safetensors").shapes.items()}
        folder = _reference_config(path, sd3_files.transformer_config(shapes), "transformer")
        return {"transformer": SD3Transformer2DModel.from_single_file(
            str(path), config=str(folder), subfolder="transformer", local_files_only=True,
            torch_dtype=torch.float16)}
    if loader == "sdtui":
        from sdtui.worker.models import load_model

        pipe = load_model(str(path), device="cpu", dtype=torch.bfloat16).pipe
    else:
        from diffusers import Flux2KleinPipeline

        pipe = Flux2KleinPipeline.from_pretrained(path, torch_dtype=torch.bfloat16,
                                                  local_files_only=True)
    return {name: module for name, module in pipe.components.items()
            if isinstance(module, torch.nn.Module)}


def child(row: str, loader: str, path: Path) -> dict:
    import hashlib
    import time

    # Both loaders' imports before the clock starts (the worker imports them at startup).
    import diffusers  # noqa: F401
    import torch
    import transformers  # noqa: F401
    from diffusers.loaders import single_file_utils  # noqa: F401

    from sdtui.worker import flux_files, flux_parts, models, sd3_files  # noqa: F401

    reset_peak_rss()  # the peak from here on
    before = status_kib("VmRSS:")
    started = time.perf_counter()
    modules = load(row, loader, path)
    seconds = time.perf_counter() - started

    def raw(tensor: torch.Tensor) -> torch.Tensor:
        return torch.Tensor.as_subclass(tensor.detach(), torch.Tensor).contiguous().reshape(
            -1).view(torch.uint8)

    # A loader may map the file and read a weight only when it is first used: touch every
    # weight once, as the first image would, before taking the peak.
    with torch.inference_mode():
        for module in modules.values():
            for tensor in module.state_dict().values():
                raw(tensor).max()  # reads every byte; a sum would make an int64 copy
    touched = time.perf_counter() - started
    peak = status_kib("VmHWM:") - before
    digests = {}
    for name, module in modules.items():
        digest = hashlib.sha256()
        for key, tensor in sorted(module.state_dict().items()):
            if key.endswith("position_ids"):
                continue
            digest.update(key.removeprefix("text_model.").encode())
            # Values, not storage: an fp8 weight kept fp8 equals its upcast copy (all exact
            # in float32); quantized blocks are compared as stored.
            digest.update(raw(tensor.float() if tensor.is_floating_point() else tensor)
                          .numpy().tobytes())
        digests[name] = digest.hexdigest()
    return {"seconds": seconds, "touched": touched, "peak_kib": peak, "digests": digests}


# --- the parent: write, run both sides, print -------------------------------------------------

def cache(path: Path) -> None:
    """Read the file(s) once, so that each loader reads from the page cache: otherwise the
    first one to run pays for the disk (and the comparison is of the disk, not the loaders)."""
    chunk = bytearray(64 * 2**20)
    for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
        with open(file, "rb", buffering=0) as f:
            while f.readinto(chunk):
                pass


def run_loader(row: str, loader: str, path: Path, in_process: bool = False) -> dict:
    """One loader's figures, from a fresh process (or, for --tiny, which prints no figures
    worth reading, from this one: every row's load, touch and digest run all the same, for
    one import of torch and diffusers instead of two a row)."""
    if in_process:
        return child(row, loader, path)
    cache(path)
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", row,
                             loader, str(path)], cwd=REPO, capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                 "PYTHONPATH": str(REPO),
                                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")})
    if result.returncode != 0:
        raise SystemExit(f"{loader} failed on {path}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _remove(path: Path) -> None:
    import shutil

    for target in [path, *path.parent.glob(path.name + ".*.ref")]:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--keep", type=Path, help="write (or reuse) the files here, keep them")
    parser.add_argument("--tiny", action="store_true",
                        help="the test models' shapes, both loaders in this process (checks "
                             "the bench runs; no figures)")
    parser.add_argument("--child", nargs=3, metavar=("ROW", "LOADER", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row, loader, path = args.child
        print(json.dumps(child(row, loader, Path(path))))
        return
    with scratch_dir(args.keep, "sdtui-bench-load-") as folder:
        print(f"{'row':<26} {'loader':<30} {'peak RSS':>9} {'x file':>7} {'load s':>7} "
              f"{'+touch s':>8}", flush=True)
        for row in args.rows:
            spec = ROWS[row]
            path, largest = spec.write(folder, args.tiny)
            size = largest.stat().st_size
            results = {loader: run_loader(row, loader, path, in_process=args.tiny)
                       for loader in ("sdtui", "reference")}
            for loader, result in results.items():
                name = "sdtui" if loader == "sdtui" else spec.reference
                peak = result["peak_kib"] * 1024
                print(f"{spec.what:<26} {name:<30} {peak / 2**30:>7.2f} G {peak / size:>7.2f} "
                      f"{result['seconds']:>7.1f} {result['touched']:>8.1f}")
            ours, theirs = results["sdtui"], results["reference"]
            same = ours["digests"] == theirs["digests"]
            print(f"{spec.what:<26} largest file {size / 2**30:.2f} GiB; sdtui/reference: "
                  f"peak {ours['peak_kib'] / max(theirs['peak_kib'], 1):.2f}x, time to every "
                  f"weight in memory {ours['touched'] / theirs['touched']:.2f}x; weights "
                  f"bit-identical: "
                  f"{'yes' if same else 'NO ' + str(ours['digests']) + str(theirs['digests'])}",
                  flush=True)
            if args.keep is None:
                _remove(path)


if __name__ == "__main__":
    sys.path[:0] = [str(BENCH), str(REPO)]  # this checkout's sdtui, wherever it is installed
    main()
