"""Where things live in the model bucket. Stdlib only: the client and the Batch child (in the
worker image) both use it.

- Model files sit at the bucket root, keyed as `sdtui.modelfiles` lays them out (Option A's
  upload writes them; a checkpoint's sidecars beside it), each with its sha256 in the object's
  metadata.
- A scale-out run R keeps everything under `runs/R/`: the resolved requests in `prompts.jsonl`
  (one per line), and `out/` where line L's image J is `L-J.png` (6 and 2 digits) beside its
  index line `L-J.json`. The index line is written after the PNG, so it marks the image done.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

SHA256_META = "sha256"  # object metadata key holding a model file's sha256 (hex)
RUNS_PREFIX = "runs/"
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")
_OUTPUT = re.compile(r"([0-9]{6})-([0-9]{2})\.(png|json)")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time, unique enough to never collide in one bucket: 20250601-120000-9f3a."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def is_run_id(text: str) -> bool:
    return bool(RUN_ID.fullmatch(text))


def run_prefix(run: str) -> str:
    return f"{RUNS_PREFIX}{run}/"


def prompts_key(run: str) -> str:
    return f"{run_prefix(run)}prompts.jsonl"


def out_prefix(run: str) -> str:
    return f"{run_prefix(run)}out/"


def image_key(run: str, line: int, index: int) -> str:
    return f"{out_prefix(run)}{line:06d}-{index:02d}.png"


def index_key(run: str, line: int, index: int) -> str:
    return f"{out_prefix(run)}{line:06d}-{index:02d}.json"


def finished_images(run: str, keys: set[str] | list[str]) -> set[tuple[int, int]]:
    """(line, image) of every finished output among `keys`: those whose index line exists."""
    done = set()
    prefix = out_prefix(run)
    for key in keys:
        if not key.startswith(prefix):
            continue
        match = _OUTPUT.fullmatch(key[len(prefix):])
        if match and match.group(3) == "json":
            done.add((int(match.group(1)), int(match.group(2))))
    return done
