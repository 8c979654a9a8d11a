"""What the lock tests share: requirement files read as pip reads them, and the requirements a
lock leaves unpinned or pins outside their range."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

from sdtui.container.lock import canonical, public_version


def requirement_lines(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def unpinned(requirements: list[Requirement], pins: dict[str, str], source: str) -> list[str]:
    """One line per requirement (that applies here) that `pins` misses or does not satisfy."""
    stale = []
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate():
            continue
        version = pins.get(canonical(requirement.name))
        if version is None:
            stale.append(f"{requirement.name} is not in the lock ({source}: {requirement})")
        elif not requirement.specifier.contains(public_version(version), prereleases=True):
            stale.append(f"the lock's {requirement.name}=={version} does not satisfy "
                         f"{source}'s {requirement}")
    return stale
