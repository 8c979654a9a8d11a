"""The app's Batch form against moto: the estimate for 1, 2, 4 and 8 GPUs appears beside the
form from the real core (identity, bucket, model, quota and price, all read-only) before
anything is submitted, and nothing is created; a quota too small shows there too."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from sdtui.ui.app import SdtuiApp
from sdtui.ui.core import Services

from ..conftest import write_safetensors
from .test_bad_input import created


def checks_text(app: SdtuiApp) -> str:
    return str(app.screen.query_one("#checks").render())


async def until(pilot, condition, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.1)


@pytest.mark.asyncio
async def test_the_form_shows_the_estimate_and_creates_nothing(aws, tmp_path, monkeypatch,
                                                               quotas) -> None:
    monkeypatch.setenv("SDTUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SDTUI_IMAGE_PROTOCOL", "halfcell")
    (tmp_path / "m").mkdir()
    model = write_safetensors(tmp_path / "m" / "tiny.safetensors")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(20)))
    app = SdtuiApp(Services(out_dir=tmp_path / "out"))
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.click("#choose-batch")
        for name, value in {"prompt_file": str(prompts), "models": str(model),
                            "bucket": "sdtui-app-estimate", "gpus": "4"}.items():
            app.screen.query_one(f"#batch-{name}", Input).value = value
        await until(pilot, lambda: "per image" in checks_text(app))
        text = checks_text(app)
        assert "✓ Estimate" in text and "AWS identity found" in text
        rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
        assert [row[0] for row in rows] == ["1", "2", "4", "8"]
        assert created(aws, tmp_path) == []

        quotas.values["L-DB2E81BA"] = 8.0
        app.screen.query_one("#batch-gpus", Input).value = "3"
        await until(pilot, lambda: "✗ Estimate" in checks_text(app))
        assert "quota L-DB2E81BA" in checks_text(app)
        assert created(aws, tmp_path) == []
