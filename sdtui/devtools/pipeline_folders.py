"""What the tiny pipeline devtools (tiny_flux, tiny_klein) share: saving a new diffusers folder
and the command line that picks a variant and a seed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_new(out: Path | str, build: Callable[[], Any]) -> Path:
    """The pipeline `build()` gives, saved as a diffusers folder at OUT (created; must not
    exist)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; pick a new path")
    build().save_pretrained(out, safe_serialization=True)
    return out


def variant_main(doc: str, variants: tuple[str, ...],
                 write: Callable[[Path, str, int], Path], argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=variants, default=variants[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write(args.out, args.variant, args.seed))
