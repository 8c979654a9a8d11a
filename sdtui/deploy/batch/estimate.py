"""What a run will cost and how long it will take, for W = 1, 2, 4, 8, before anything exists.

Each shard's instance is billed per second with a 60 s minimum, from launch to termination:
    shard time = boot and image pull + model load + its images × seconds per image
    wall time  = the slowest shard;  cost = hourly price × Σ max(shard time, 60 s) / 3600
Seconds per image and load time are the ones measured by earlier runs of the same model, size
and steps on the same instance type (kept in the state dir), else the defaults below. Batch
keeps an idle instance a few minutes before scaling down; that is not in the estimate.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdtui import protocol
from sdtui.deploy.aws.pricing import MINIMUM_BILLED_S
from sdtui.paths import state_dir

SHARD_CHOICES = (1, 2, 4, 8)
# Launch, ECS registration and pulling the CUDA worker image (about 6 GB), per family.
BOOT_AND_PULL_S = {"g4dn": 300.0, "g5": 270.0, "g6": 270.0, "g6e": 270.0}
DEFAULT_BOOT_AND_PULL_S = 300.0
# Seconds per sampling step at 512×512 in fp16 (SD 1.x, diffusers), per GPU family; a step
# costs in proportion to the pixels. VAE decode and PNG encode add DECODE_S per image.
STEP_S_AT_512 = {"g4dn": 0.18, "g5": 0.08, "g6": 0.11, "g6e": 0.06}
DEFAULT_STEP_S_AT_512 = 0.18
DECODE_S = 1.0
# Model load: the copy from S3 into scratch, then to the GPU.
LOAD_BYTES_PER_S = 100e6
LOAD_FIXED_S = 15.0
TIMINGS_FILE = "batch-timings.json"


@dataclass(frozen=True)
class Estimate:
    shards: int
    images: int
    wall_s: float
    cost_usd: float
    per_image_usd: float
    hourly_usd: float


@dataclass(frozen=True)
class Rates:
    """What one image and one model load take on one instance, and where the numbers came
    from ("measured" by earlier runs, or "default")."""

    seconds_per_image: float
    load_s: float
    boot_s: float
    source: str


ASSUMED_SIZE = 512  # for a request without a size (the model's own)
ASSUMED_MODEL_BYTES = 4_265_380_512  # sd-v1-4.ckpt: a model in the bucket, sized without AWS


def family(instance_type: str) -> str:
    return instance_type.split(".")[0]


def default_seconds_per_image(instance_type: str, width: int, height: int, steps: int) -> float:
    step = STEP_S_AT_512.get(family(instance_type), DEFAULT_STEP_S_AT_512)
    return steps * step * (width * height) / (512 * 512) + DECODE_S


def default_load_s(model_bytes: int) -> float:
    return LOAD_FIXED_S + model_bytes / LOAD_BYTES_PER_S


def timing_key(instance_type: str, model: str, width: int | None, height: int | None,
               steps: int | None) -> str:
    """No size or steps: the model's own, which is what the recorded run measured."""
    return f"{instance_type}|{model}|{width or 'own'}x{height or 'own'}|{steps or 'own'}"


def rates(instance_type: str, model: str, width: int | None, height: int | None,
          steps: int | None, model_bytes: int) -> Rates:
    boot = BOOT_AND_PULL_S.get(family(instance_type), DEFAULT_BOOT_AND_PULL_S)
    seen = load_timings().get(timing_key(instance_type, model, width, height, steps))
    if seen:
        return Rates(float(seen["seconds_per_image"]), float(seen["load_s"]), boot, "measured")
    source = "default"
    if width is None or height is None:
        # The model's own size is known once the worker loads it; SD 1.x/2.x is 512.
        source = (f"default at {ASSUMED_SIZE}x{ASSUMED_SIZE}; the model's own size is known "
                  "once it loads (SDXL's 1024x1024 takes 4x longer: pass --width/--height)")
        width, height = width or ASSUMED_SIZE, height or ASSUMED_SIZE
    return Rates(default_seconds_per_image(instance_type, width, height,
                                           steps or protocol.DEFAULT_STEPS),
                 default_load_s(model_bytes), boot, source)


def estimate(images_per_shard: list[int], hourly_usd: float, rates: Rates) -> Estimate:
    """One W: `images_per_shard` has W entries (a shard with no image never starts)."""
    times = [rates.boot_s + rates.load_s + n * rates.seconds_per_image
             for n in images_per_shard if n]
    billed = sum(max(t, MINIMUM_BILLED_S) for t in times)
    images = sum(images_per_shard)
    cost = hourly_usd * billed / 3600
    return Estimate(len(images_per_shard), images, max(times, default=0.0), cost,
                    cost / images if images else 0.0, hourly_usd)


def table(line_counts: list[int], hourly_usd: float, rates: Rates,
          choices: tuple[int, ...] = SHARD_CHOICES) -> list[Estimate]:
    from sdtui.sharding import images_per_shard

    return [estimate(images_per_shard(line_counts, w), hourly_usd, rates) for w in choices]


def attempt_timeout_s(images: int, rates: Rates) -> int:
    """A shard attempt's limit: three times its expected run, and at least 30 minutes."""
    return max(1800, math.ceil(3 * (rates.load_s + images * rates.seconds_per_image)))


# --- measured timings ----------------------------------------------------------------------


def _timings_path() -> Path:
    return state_dir() / TIMINGS_FILE


def load_timings() -> dict[str, Any]:
    try:
        data = json.loads(_timings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_timings(key: str, seconds_per_image: list[float], load_s: list[float]) -> None:
    """Fold a run's measurements into the kept averages (weighted by how many were seen)."""
    if not seconds_per_image:
        return
    timings = load_timings()
    seen = timings.get(key) or {"seconds_per_image": 0.0, "load_s": 0.0, "images": 0,
                                "loads": 0}
    images, loads = int(seen.get("images", 0)), int(seen.get("loads", 0))
    seen["seconds_per_image"] = ((seen["seconds_per_image"] * images + sum(seconds_per_image))
                                 / (images + len(seconds_per_image)))
    if load_s:
        seen["load_s"] = (seen["load_s"] * loads + sum(load_s)) / (loads + len(load_s))
    seen["images"], seen["loads"] = images + len(seconds_per_image), loads + len(load_s)
    timings[key] = seen
    path = _timings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".timings-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(timings, out, indent=1)
    os.replace(tmp, path)


def format_table(estimates: list[Estimate], rates: Rates) -> list[str]:
    """The lines --estimate prints (and the app's form shows)."""
    lines = [f"{'GPUs':>4}  {'wall time':>9}  {'total':>8}  {'per image':>9}"]
    for e in estimates:
        lines.append(f"{e.shards:>4}  {_duration(e.wall_s):>9}  ${e.cost_usd:>7.2f}  "
                     f"${e.per_image_usd:>8.4f}")
    lines.append(f"at ${estimates[0].hourly_usd:.3f}/h per GPU; {rates.seconds_per_image:.1f} s "
                 f"per image and {rates.load_s:.0f} s model load ({rates.source}), "
                 f"{rates.boot_s:.0f} s boot and image pull per instance; billed per second, "
                 f"60 s minimum")
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
