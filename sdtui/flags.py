"""The command line's flags as typed settings: argparse's Namespace in, a `Given` out.

Flags that were not passed are left out, so the lower layers (the ledger, what was used last,
the config file) decide them. Stdlib only: the app's start-up path uses it too.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdtui.settings import Given

# Flag destinations that are settings of a deployment option; each option keeps its own fields
# (sdtui.deploy.settings ignores the others).
DEPLOYMENT_FLAGS = ("models", "volume", "base_image", "docker_host", "profile", "region",
                    "bucket", "instance_type", "spot", "idle_minutes", "ami", "ssh_cidr", "gpus")
# Flag destinations that are fields of generation.GenerateSettings.
GENERATE_FLAGS = ("prompt", "negative_prompt", "steps", "cfg", "width", "height", "seed",
                  "scheduler", "schedule", "count", "preview_every", "init_image", "mask",
                  "strength", "fit", "gfpgan", "upscale", "upscale_strength", "variation_amount",
                  "variation_seed", "grid")
_DEST = {"models": "model"}  # settings field -> argparse destination, where they differ


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    values = {name: getattr(args, _DEST.get(name, name), None) for name in names}
    return {k: v for k, v in values.items() if v is not None and v != "" and v != []}


def given_from_args(args: argparse.Namespace) -> Given:
    return Given(
        option=getattr(args, "option", None),
        name=getattr(args, "name", None),
        deployment=_given(args, DEPLOYMENT_FLAGS),
        generate=_given(args, GENERATE_FLAGS),
    )
