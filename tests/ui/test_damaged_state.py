"""The app in a real terminal with damaged files in its state dir: it starts, shows the damaged
deployment as damaged (naming the file and what to do) and lists the others; and a crash never
returns exit code 0 to the shell."""

from __future__ import annotations

import json
import sys

from sdtui.ledger import Ledger, deployments_dir

from .terminal import in_terminal


def test_the_app_starts_past_damaged_state_files_and_marks_them(isolated_dirs) -> None:
    Ledger("good", "local").record("volume", "sdtui-test-good-models")
    (deployments_dir() / "torn.json").write_text('{"schema": 1, "name": "torn", "opt')
    (deployments_dir() / "latin.json").write_bytes(b'{"schema": 1, "name": "caf\xe9"}')
    (isolated_dirs / "state" / "recent.json").write_text(json.dumps({
        "schema": 1, "current": ["BAD NAME", "local"], "settings": {"local": {"models": 5}}}))
    term = in_terminal("damaged", [sys.executable, "-m", "sdtui"])
    try:
        screen = term.wait_for("Existing deployments", timeout=60)
        screen = term.wait_for("damaged", timeout=30)
        assert "Traceback" not in screen
        assert "good" in screen and "torn" in screen and "latin" in screen
        term.wait_for("is damaged", timeout=30)  # the notice names the file and the fix
        term.keys("C-q")
        term.wait_for("SDTUI-EXITED-0", timeout=30)
    finally:
        term.kill()


def test_a_crash_in_the_app_does_not_exit_0(isolated_dirs) -> None:
    crash = ("from sdtui.ui.app import SdtuiApp, run\n"
             "from sdtui.ui.core import Services\n"
             "def boom():\n"
             "    raise RuntimeError('sdtui-test-crash')\n"
             "raise SystemExit(run(SdtuiApp(Services(list_deployments=boom))))\n")
    term = in_terminal("crash", [sys.executable, "-c", crash])
    try:
        screen = term.wait_for("SDTUI-EXITED-", timeout=60)
        assert "sdtui-test-crash" in screen
        assert "SDTUI-EXITED-1" in screen
    finally:
        term.kill()
