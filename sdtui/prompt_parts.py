"""The guide's blend syntax, `a cat:0.3 a dog:0.7`, split into its parts. Stdlib only: the
worker encodes blends with it and the metadata writers record them as the dream tool did."""

from __future__ import annotations

import re

# One `text:weight` part of the guide's blend syntax, `a cat:0.3 a dog:0.7`.
_GUIDE_PART = re.compile(r"\s*([^:()]+?):\s*(-?[0-9]*\.?[0-9]+)(?=\s|$)")


def guide_blend(prompt: str) -> list[tuple[str, float]] | None:
    """The parts of a prompt written entirely in the guide's `a:0.3 b:0.7` form, else None."""
    parts, pos = [], 0
    for match in _GUIDE_PART.finditer(prompt):
        if match.start() != pos:
            return None
        parts.append((match.group(1).strip(), float(match.group(2))))
        pos = match.end()
    if not parts or prompt[pos:].strip():
        return None
    return parts
