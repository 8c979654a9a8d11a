"""The scale-out form's run, UI-free: its lines (the prompt file with the form's generation
settings) and its estimate, through the same core calls as `--option batch`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdtui.ui.forms import from_form


def batch_lines(values: dict[str, Any]) -> list[dict[str, Any]]:
    from sdtui.deploy.batch.requests import run_lines
    from sdtui.inputs import read_prompt_file

    return run_lines(read_prompt_file(Path(values["prompt_file"])),
                     from_form("batch", values).generate)


def batch_estimate(values: dict[str, Any]) -> list[str]:
    """The estimate table as --estimate prints it (AWS is only read; nothing is created)."""
    from sdtui.deploy.batch.estimate import format_table
    from sdtui.deploy.settings import open_deployment
    from sdtui.errors import NoCredentials

    lines = batch_lines(values)
    deployment: Any = open_deployment(from_form("batch", values), for_use=True)[1]
    notes = [note] if (note := deployment.fit_to(lines)) else []
    try:
        rates, table = deployment.estimates(lines)
    except NoCredentials:  # an estimate needs no account: the built-in prices, marked so
        rates, table, without = deployment.estimates_without_account(lines)
        notes.append(without)
    return [*notes, *format_table(table, rates)]
