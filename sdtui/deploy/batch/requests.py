"""A run's lines from what the user gave: the prompts and the generation settings (flags, or the
app's form), each request checked by the protocol, then resolved for sharding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdtui import sharding
from sdtui.errors import BadInput
from sdtui.generation import init_image_data, request_params, resolve_generate


def run_lines(prompts: list[str], generate: Mapping[str, Any]) -> list[dict[str, Any]]:
    """BadInput on the first bad value or when there is no prompt; nothing is created."""
    if not prompts:
        raise BadInput("no prompts given",
                       fix="pass --prompt-file FILE (one prompt per line) or --prompt")
    given = {k: v for k, v in generate.items() if k != "prompt"}
    given.setdefault("preview_every", 0)
    settings = resolve_generate(given)
    init = init_image_data(settings)  # read once for the whole file
    try:
        return sharding.resolve([request_params(settings.with_prompt(p), init) for p in prompts])
    except sharding.ShardingError as exc:
        raise BadInput(str(exc), fix="see sdtui --help for valid values") from None
