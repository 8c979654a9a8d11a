"""The app in a real terminal that is resized (issue 21 item 23: a stray character stayed at the
footer's edge after a resize at 80×24): after each resize the screen is exactly what a fresh
start at that size draws, so a character left behind from the old size fails the test."""

from __future__ import annotations

import difflib
import sys
import time

from .terminal import Tmux, in_terminal

SMALL, LARGE = (80, 24), (220, 60)


def _sdtui(name: str, size: tuple[int, int]) -> Tmux:
    """`sdtui` itself, on an engine that does not answer (so its checks settle at once)."""
    return in_terminal(name, [sys.executable, "-m", "sdtui"], size)


def _fresh(term: Tmux) -> str:
    term.wait_for("✗ Docker engine reachable", timeout=60)
    term.wait_for("^p palette", timeout=30)  # the footer, drawn last
    return term.settled(timeout=30)


def _redrawn_as(term: Tmux, size: tuple[int, int], fresh: str, timeout: float = 30) -> None:
    """Resize, then wait for the screen to be the fresh one; else show the lines that differ."""
    term.resize(*size)
    deadline = time.monotonic() + timeout
    while (screen := term.screen()) != fresh or (screen := term.settled(timeout)) != fresh:
        if time.monotonic() > deadline:
            diff = "\n".join(difflib.unified_diff(fresh.splitlines(), screen.splitlines(),
                                                  "fresh start", "after the resize",
                                                  lineterm=""))
            raise AssertionError(f"at {size[0]}×{size[1]} the resized screen is not what a "
                                 f"fresh start draws:\n{diff}")
        time.sleep(0.1)


def test_a_resized_terminal_shows_what_a_fresh_start_at_that_size_shows(isolated_dirs) -> None:
    small, large = _sdtui("resize-small", SMALL), _sdtui("resize-large", LARGE)
    try:
        fresh_small, fresh_large = _fresh(small), _fresh(large)
        _redrawn_as(small, LARGE, fresh_large)  # grown: nothing of the small layout is left
        _redrawn_as(small, SMALL, fresh_small)  # and back
        _redrawn_as(large, SMALL, fresh_small)  # shrunk: the footer's edge holds no stray
        _redrawn_as(large, LARGE, fresh_large)
    finally:
        small.kill()
        large.kill()

