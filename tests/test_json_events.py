"""`--json`: one naming style (snake_case) for every event, each one documented in the README."""

from __future__ import annotations

import io
import json
import re
import typing
from pathlib import Path

from sdtui import deploy, headless, headless_batch, reporter
from sdtui.deploy.base import DeployEvent
from sdtui.reporter import Reporter

README = Path(__file__).resolve().parents[1] / "README.md"
SNAKE = re.compile(r"[a-z]+(_[a-z]+)*")
EXAMPLES = {
    "StepStarted": ("models", "Copy the model files"),
    "StepProgress": ("models", 10, 20, "bytes"),
    "DownloadProgress": ("fetch", 10, 20, "bytes", "sd_xl_base_1.0.safetensors", 5.0e6, 2.0),
    "StepLog": ("models", "copying sd-v1-4.ckpt"),
    "StepFinished": ("models", "done", "copied", 1.5),
    "CostUpdate": (0.526, 0.01, 1800),
}


def documented_events() -> set[str]:
    section = README.read_text().split("### `--json` events", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


def emitted(reporter_call: typing.Callable[[Reporter], None]) -> list[dict]:
    out = io.StringIO()
    reporter_call(Reporter(True, err=io.StringIO(), out=out))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_deployment_events_are_snake_case_with_their_fields() -> None:
    kinds = typing.get_args(DeployEvent)
    assert {k.__name__ for k in kinds} == set(EXAMPLES)  # a new event gets an example here
    for kind in kinds:
        (line,) = emitted(lambda r, k=kind: r.deploy(k(*EXAMPLES[k.__name__])))
        assert SNAKE.fullmatch(line["event"]), line
    (started,) = emitted(lambda r: r.deploy(deploy.base.StepStarted("models", "Copy")))
    assert started == {"event": "step_started", "step": "models", "title": "Copy"}


def test_every_event_a_run_can_print_is_documented() -> None:
    names = {reporter.event_name(kind(*EXAMPLES[kind.__name__]))
             for kind in typing.get_args(DeployEvent)}
    source = "".join(Path(module.__file__).read_text()
                     for module in (headless, headless_batch, reporter))
    names |= set(re.findall(r'\.json\("([a-z_]+)"', source))  # the runners' own events
    names |= {"progress", "preview", "image", "done"}  # the worker's, passed through
    assert all(SNAKE.fullmatch(name) for name in names), names
    assert names == documented_events()
