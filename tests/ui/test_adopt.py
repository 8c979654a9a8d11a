"""The prompt panel adopts a request that a client which quit left running in the worker: it
shows it in the form and follows it to the end, saving its images once."""

from __future__ import annotations

import contextlib

import pytest
from local_cli import frozen_process
from textual.widgets import TextArea

from sdtui.outputs import read_index
from sdtui.ui.widgets.gallery import Gallery

from .fakes import FakeDeployment
from .test_flows import SIZE, make_app, provision, text_of, until

pytestmark = pytest.mark.asyncio


async def test_the_prompt_panel_adopts_a_request_left_running(worker, tiny_model,
                                                              isolated_dirs) -> None:
    gone = worker.attach()  # a client that sends a batch, then quits mid-way
    events = gone.generate(prompt="left running", seed=3, count=2, steps=60, width=64,
                           height=64, preview_every=0)
    rid = next(events)["id"]
    # Frozen until the app's first question waits on the worker's stdin, so the request still
    # runs when the app asks about it, however slow or fast this machine is.
    freeze = contextlib.ExitStack()
    waiting = freeze.enter_context(frozen_process(worker.proc.pid))
    gone.close()
    app = make_app(FakeDeployment(worker), isolated_dirs, tiny_model)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await provision(app, pilot)
            await until(pilot, waiting, timeout=120)
            freeze.close()
            await until(pilot, lambda: "adopted" in text_of(app, "#gen-status")
                        or len(screen.query_one("#gallery", Gallery).images) == 2, timeout=120)
            assert screen.query_one("#prompt", TextArea).text == "left running"
            gallery = screen.query_one("#gallery", Gallery)
            await until(pilot, lambda: len(gallery.images) == 2 and not screen.generating,
                        timeout=300)
            records = read_index(isolated_dirs / "outputs")
            assert sorted((r["request"], r["index"]) for r in records) == [(rid, 0), (rid, 1)]
            assert sorted(i.path.name for i in gallery.images) == sorted(r["file"]
                                                                         for r in records)
            assert "2 image(s) saved" in str(screen.query_one("#gen-status").render())
    finally:
        freeze.close()
