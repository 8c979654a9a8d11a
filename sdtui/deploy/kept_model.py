"""A model file gone from this machine after a deployment took its copy: both options let a run
that needs no upload go on when this deployment's ledger records giving it that very path (the
copy in the Docker volume, or in the bucket, serves); each option checks its copy is there."""

from __future__ import annotations

from pathlib import Path

from sdtui.errors import BadInput
from sdtui.fetch.refs import is_remote
from sdtui.ledger import Ledger
from sdtui.userfiles import expand


def recorded_gone(name: str, option: str, models: list[Path | str]) -> Ledger | None:
    """Deployment `name`'s ledger when the first model is a path gone from this machine that
    the ledger records as its model; else None."""
    if not models or is_remote(models[0]):
        return None
    path = expand(models[0], "model file").absolute()
    if path.exists():
        return None
    ledger = Ledger.load(name)
    if ledger is None or ledger.option != option:
        return None
    return ledger if (ledger.params.get("models") or [None])[0] == str(path) else None


def kept_note(model: str, where: str) -> str:
    """What a run says of a model file it does without."""
    return f"{model} is gone from this machine, the {where}'s copy serves"


def model_gone(model: Path | str, why: str) -> BadInput:
    return BadInput(f"model file {model} does not exist, and {why}",
                    fix="put the file back, or pass --model with another checkpoint")
