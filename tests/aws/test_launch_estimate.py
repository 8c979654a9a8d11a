"""The Option A form's price line asks AWS (moto over HTTP here) once the identity check
passes: the current spot price, not the built-in table's on-demand bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Checkbox

from sdtui.deploy.aws.estimate import asked_price
from sdtui.settings import Given
from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services


def test_the_spot_price_is_asked_from_ec2() -> None:
    price = asked_price("g4dn.xlarge", "us-east-1", spot=True)
    assert price.source == "spot-price"  # moto quotes its own spot price history


@pytest.mark.asyncio
async def test_the_form_shows_the_price_aws_quotes(model: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDTUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SDTUI_IMAGE_PROTOCOL", "halfcell")
    spot = asked_price("g4dn.xlarge", "us-east-1", spot=True)
    expected = f"g4dn.xlarge spot ${spot.hourly_usd:.3f}/h"
    app = SdtuiApp(Services(out_dir=tmp_path / "outputs", given=Given(
        option="aws", deployment={"models": [model], "bucket": "my-sd-models",
                                  "region": "us-east-1"})))
    async with app.run_test(size=(140, 45)) as pilot:
        def shown(selector: str) -> str:
            return str(app.screen.query_one(selector).render())

        app.screen.query_one("#aws-spot", Checkbox).value = True
        deadline = asyncio.get_running_loop().time() + 60
        while expected not in shown("#aws-estimate"):  # the table's bound first, then AWS's
            assert asyncio.get_running_loop().time() < deadline, shown("#aws-estimate")
            await pilot.pause(0.05)
        assert "✓ AWS identity found" in shown("#checks")
