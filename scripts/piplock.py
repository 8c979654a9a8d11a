"""pip's resolver as the lock scripts use it (scripts/lock-worker-deps.py and
scripts/lock-dev-deps.py): metadata only, nothing installed."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdtui.container.lock import canonical, public_version, read_lock  # noqa: E402


def resolve(args: list[str], constraints: Path | None) -> dict[str, str]:
    """{canonical name: version} of everything pip would install for `args`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                   "--quiet", "--report", str(report), *args]
        if constraints is not None:
            command += ["-c", str(constraints)]
        subprocess.run(command, check=True)
        items = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): public_version(i["metadata"]["version"])
            for i in items}


def pins_only(text: str, *, drop_torch: bool = False) -> str:
    """The `name==version` lines of a lock or a `pip freeze` (pip refuses -e lines as
    constraints); without torch when a new torch pin is asked for."""
    lines = []
    for line in text.splitlines():
        name, sep, _ = line.partition("==")
        torch = canonical(name) == "torch"
        if sep and not line.startswith(("#", "-")) and not (drop_torch and torch):
            lines.append(line.strip())
    return "\n".join(lines) + "\n"


def write_lock(path: Path, header: str, pins: dict[str, str]) -> None:
    """Write the lock and print what moved against the one it replaces."""
    current = read_lock(path.read_text()) if path.exists() else {}
    path.write_text(header + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    print(f"wrote {path.relative_to(ROOT)}: {len(pins)} packages")
    added = sorted(set(pins) - set(current))
    changed = sorted(n for n in set(pins) & set(current) if pins[n] != current[n])
    removed = sorted(set(current) - set(pins))
    for label, names in (("added", added), ("changed", changed), ("removed", removed)):
        if names:
            print(f"  {label}: " + ", ".join(
                f"{n}=={pins.get(n, current.get(n))}" for n in names))
