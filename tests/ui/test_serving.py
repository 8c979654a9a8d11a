"""F2 on the prompt panel runs the real `sdtui serve` for the open deployment. Here the
deployment is the tests' fake, which has no ledger: the command refuses it in one line, and the
app shows that line and clears the status bar (the real path's success is driven in
test_real_local.py)."""

from __future__ import annotations

import pytest

from sdtui.ui.app import SdtuiApp

from .conftest import fake_services
from .fakes import FakeDeployment
from .test_flows import SIZE, text_of, until
from .test_help import open_screen


@pytest.mark.asyncio
async def test_f2_starts_sdtui_serve_and_shows_why_it_stopped(isolated_dirs) -> None:
    services = fake_services(FakeDeployment(None), isolated_dirs / "outputs")
    services.serve_port = 0
    app = SdtuiApp(services)
    async with app.run_test(size=SIZE) as pilot:
        await open_screen("prompt", app, pilot)
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Serve the A1111 API"].startswith("f2 · ")
        await pilot.press("f2")
        assert "api: starting" in text_of(app, "StatusBar")
        await until(pilot, lambda: app.serving is None, timeout=120)
        notes = [str(n.message) for n in app._notifications]
        assert any(n.startswith("sdtui serve stopped: there is no deployment 'help' to serve")
                   for n in notes), notes
        assert "api:" not in text_of(app, "StatusBar")
