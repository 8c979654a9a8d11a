"""The client's and the test tools' locks (requirements.lock, requirements-dev.lock) against the
requirement files they come from and the environment the tests run in. A kept venv once hid a
fresh machine's newer moto (issue 20): now every package is pinned, installed exactly, and
nothing else is installed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from sdtui.container.lock import canonical, mismatches, read_lock
from tests.lock_checks import requirement_lines, unpinned

ROOT = Path(__file__).resolve().parents[1]
WORKER_LOCK = ROOT / "sdtui" / "container" / "requirements-worker.lock"
CLIENT_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
REGENERATE = ".venv/bin/python scripts/lock-dev-deps.py"
# Installed with --no-deps on purpose (requirements-*-nodeps.txt says why): pip check names
# their undeclared needs, which nothing here imports.
NO_DEPS = {"sd-prompt-reader", "open-clip-torch", "spandrel"}
# The interpreter's own installer, and the package under test.
NOT_LOCKED = {"pip", "sdtui"}


def lock(path: Path) -> dict[str, str]:
    return read_lock(path.read_text())


def test_the_client_lock_pins_every_dependency_of_the_package():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    stale = unpinned([Requirement(d) for d in dependencies], lock(CLIENT_LOCK), "pyproject.toml")
    assert not stale, f"requirements.lock is out of date: {'; '.join(stale)}. Run `{REGENERATE}`"


def test_the_dev_lock_pins_every_test_tool():
    pins = {**lock(WORKER_LOCK), **lock(CLIENT_LOCK), **lock(DEV_LOCK)}
    stale = [line for name in ("requirements-dev.txt", "requirements-dev-nodeps.txt")
             for line in unpinned(requirement_lines(ROOT / name), pins, name)]
    assert not stale, (f"requirements-dev.lock is out of date: {'; '.join(stale)}. "
                       f"Run `{REGENERATE}`")


def test_the_locks_agree_where_they_overlap():
    """The test environment holds all three sets: a package they share has one version."""
    worker, client, dev = lock(WORKER_LOCK), lock(CLIENT_LOCK), lock(DEV_LOCK)
    clashes = [f"{name}: {a[name]} vs {b[name]}"
               for a, b in ((worker, client), (worker, dev), (client, dev))
               for name in set(a) & set(b) if a[name] != b[name]]
    assert not clashes, f"the locks disagree: {clashes}. Run `{REGENERATE}`"


def test_the_test_environment_runs_the_client_and_dev_locks():
    problems = mismatches({**lock(CLIENT_LOCK), **lock(DEV_LOCK)})
    assert not problems, ("the test environment is not the locked set: " + "; ".join(problems)
                          + ". Run scripts/setup-test-env.sh")


def test_nothing_is_installed_beyond_the_locks():
    """A package no lock names (left from an older set, or pulled in by hand) could change what
    the tests do: a pytest plugin loads itself."""
    locked = {**lock(WORKER_LOCK), **lock(CLIENT_LOCK), **lock(DEV_LOCK)}
    extra = sorted({canonical(d.metadata["Name"]) for d in metadata.distributions()}
                   - set(locked) - NOT_LOCKED)
    assert not extra, (f"installed but in no lock: {extra}. Run scripts/setup-test-env.sh (it "
                       "makes the venv anew), or lock them")


def test_the_locked_set_is_complete():
    """pip's own check: every installed package's requirements are met by the locked set (so
    the user's `pip install -c requirements.lock .` and the --no-deps installs agree)."""
    run = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                         timeout=120)
    problems = [line for line in run.stdout.splitlines()
                if line.strip() and canonical(line.split()[0]) not in NO_DEPS]
    assert not problems, "pip check: " + "; ".join(problems) + f". Run `{REGENERATE}`"
