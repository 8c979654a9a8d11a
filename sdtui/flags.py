"""The command line's flags as typed settings: argparse's Namespace in, a `Given` out.

A flag whose destination is a field of GenerateSettings fills in the request; any other flag
that is not a command (status, teardown, ...) is offered to the deployment's settings, and each
option's settings class takes the fields it has (sdtui.deploy.settings). So a new setting is a
dataclass field and a flag of the same name. Flags that were not passed are left out, so the
lower layers (the ledger, what was used last, the config file) decide them.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdtui.generation import GenerateSettings
from sdtui.settings import Given, field_names, is_set

# What the command does, not what it is asked to make: never a setting.
COMMAND_FLAGS = ("no_ui", "option", "name", "status", "teardown", "purge_volume", "purge_bucket",
                 "prompt_file", "from_png", "out", "json", "estimate", "cancel", "list_models")
# argparse destination -> settings field, where they differ
_FIELD_OF = {"model": "models", "lora_file": "lora_files"}


def given_from_args(args: argparse.Namespace) -> Given:
    generate_fields = set(field_names(GenerateSettings))
    generate: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest in COMMAND_FLAGS or not is_set(value):
            continue
        name = _FIELD_OF.get(dest, dest)
        (generate if name in generate_fields else deployment)[name] = value
    return Given(option=getattr(args, "option", None), name=getattr(args, "name", None),
                 deployment=deployment, generate=generate)
