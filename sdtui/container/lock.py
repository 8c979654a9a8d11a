"""The worker's dependency lock, `requirements-worker.lock`: every package the worker runs with,
torch included, pinned to one version. The test environment, `Dockerfile.local` and `Dockerfile`
all install exactly this set (torch first, from the CPU or the CUDA wheel index: only that
variant differs); `scripts/lock-worker-deps.py` regenerates it from the requirement files.

Stdlib only: the image build runs this file as a script, before the package is installed, to
check that what pip installed is what the lock says (`python3 lock.py LOCK`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

LOCK_NAME = "requirements-worker.lock"
REGENERATE = ".venv/bin/python scripts/lock-worker-deps.py"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def canonical(name: str) -> str:
    """PEP 503 normalisation: `Typing_Extensions` and `typing-extensions` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """`2.13.0+cpu` -> `2.13.0`: the local label names the build variant, not the release."""
    return version.split("+", 1)[0]


def read_lock(text: str) -> dict[str, str]:
    """{canonical name: version} from `name==version` lines; anything else is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"line {number} of the lock is not `name==version`: {raw!r}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def mismatches(pins: dict[str, str],
               installed: Callable[[str], str | None] = installed_version) -> list[str]:
    """One line per locked package that is missing or at another version."""
    problems = []
    for name, version in sorted(pins.items()):
        have = installed(name)
        if have is None:
            problems.append(f"{name}: locked {version}, not installed")
        elif public_version(have) != public_version(version):
            problems.append(f"{name}: locked {version}, installed {have}")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 lock.py LOCK [LOCK ...]", file=sys.stderr)
        return 2
    failed = False
    for lock in argv:
        problems = mismatches(read_lock(Path(lock).read_text(encoding="utf-8")))
        for line in problems:
            print(f"ERROR: {line}", file=sys.stderr)
        if problems:
            print(f"ERROR: this environment does not match {lock}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
