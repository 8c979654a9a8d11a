"""A prompt file over W GPUs: which lines each shard runs, and the seeds that make every line's
pixels independent of W. Stdlib only: the client, the Batch child and the tests share it.

Each line of a run is one fully resolved `generate` request: whatever the worker would pick at
random (the seed, a variation seed) is picked here, once, when the run is made. Shard i of W
runs lines i, i+W, i+2W, ...; a line always gives the same images whichever shard runs it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Any

from sdtui import protocol

MAX_LINES = 100_000
# Init images travel inside each line, so a run's file can be large; the child reads it whole.
MAX_PROMPTS_BYTES = 256 * 1024 * 1024
_RANDOM = secrets.SystemRandom()


class ShardingError(ValueError):
    """A run's prompts or shard numbers that cannot be used; the message says which."""


def resolve(requests: Iterable[dict[str, Any]], rng: Any = _RANDOM) -> list[dict[str, Any]]:
    """The run's lines: each request checked by the protocol, with its random choices made.
    Previews are off (nobody watches a shard's steps)."""
    lines = []
    for number, params in enumerate(requests):
        line = checked_line(dict(params, preview_every=0), number)
        if line["seed"] is None:
            line["seed"] = rng.randrange(protocol.MAX_SEED - line["count"] + 1)
        if line["variation_amount"] and line["variation_seed"] is None:
            line["variation_seed"] = rng.randrange(protocol.MAX_SEED + 1)
        lines.append(line)
    if not lines:
        raise ShardingError("the run has no prompts")
    if len(lines) > MAX_LINES:
        raise ShardingError(f"the run has {len(lines)} prompts; the limit is {MAX_LINES}")
    return lines


def checked_line(params: dict[str, Any], number: int) -> dict[str, Any]:
    try:
        request = protocol.request("generate", id=line_id(number), **params)
    except protocol.ProtocolError as exc:
        raise ShardingError(f"line {number + 1}: {exc}") from None
    return {k: v for k, v in request.items() if k not in ("type", "id")}


def line_id(number: int) -> str:
    return f"line-{number}"


def encode_lines(lines: list[dict[str, Any]]) -> bytes:
    data = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
    if len(data) > MAX_PROMPTS_BYTES:
        raise ShardingError(f"the run's requests take {len(data) >> 20} MiB; the limit is "
                            f"{MAX_PROMPTS_BYTES >> 20} MiB (init images travel in every line)")
    return data


def decode_lines(data: bytes) -> list[dict[str, Any]]:
    """Read a run's prompts.jsonl back, every line checked again (the child trusts nothing)."""
    if len(data) > MAX_PROMPTS_BYTES:
        raise ShardingError(f"prompts file is larger than {MAX_PROMPTS_BYTES >> 20} MiB")
    lines = []
    for number, raw in enumerate(data.splitlines()):
        try:
            params = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ShardingError(f"line {number + 1} is not JSON: {exc}") from None
        if not isinstance(params, dict):
            raise ShardingError(f"line {number + 1} is not a JSON object")
        line = checked_line(params, number)
        if line["seed"] is None:
            raise ShardingError(f"line {number + 1} has no seed; runs carry resolved seeds")
        lines.append(line)
    if not lines or len(lines) > MAX_LINES:
        raise ShardingError(f"prompts file has {len(lines)} lines (1 to {MAX_LINES} expected)")
    return lines


def check_shard(shard: int, shards: int) -> None:
    if shards < 1:
        raise ShardingError(f"{shards} shards: need at least one")
    if not 0 <= shard < shards:
        raise ShardingError(f"shard index {shard} is outside 0..{shards - 1}")


def shard_lines(total: int, shard: int, shards: int) -> range:
    """The line numbers shard `shard` of `shards` runs: shard, shard+shards, ..."""
    check_shard(shard, shards)
    return range(shard, total, shards)


def shard_of(line: int, shards: int) -> int:
    return line % shards


def images_of(lines: list[dict[str, Any]], numbers: Iterable[int]) -> list[tuple[int, int]]:
    """(line, image) of every image the given lines make."""
    return [(n, j) for n in numbers for j in range(lines[n]["count"])]


def pending_lines(lines: list[dict[str, Any]], shard: int, shards: int,
                  finished: set[tuple[int, int]]) -> list[int]:
    """The shard's lines with an image not finished yet (a retried shard resumes here)."""
    return [n for n in shard_lines(len(lines), shard, shards)
            if any((n, j) not in finished for j in range(lines[n]["count"]))]


def images_per_shard(counts: list[int], shards: int) -> list[int]:
    """How many images each shard makes, from each line's image count."""
    totals = [0] * shards
    for number, count in enumerate(counts):
        totals[shard_of(number, shards)] += count
    return totals
