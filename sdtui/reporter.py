"""How `sdtui --no-ui` speaks: deployment and worker events for people (stderr, progress bars,
image paths on stdout) or for scripts (--json: one event per line on stdout). The headless
runner and the scale-out's both use it, from below."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict
from typing import Any, TextIO

from sdtui.deploy.base import (
    CostUpdate,
    DeployEvent,
    DownloadProgress,
    StepFinished,
    StepLog,
    StepProgress,
    StepStarted,
)
from sdtui.deploy.settings import Target


def event_name(ev: object) -> str:
    """A deployment event's --json name: its class in snake_case (StepStarted: step_started)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(ev).__name__).lower()


class Reporter:
    """Renders deployment and worker events for people (stderr) or scripts (--json, stdout)."""

    def __init__(self, as_json: bool, err: TextIO | None = None, out: TextIO | None = None
                 ) -> None:
        self.as_json = as_json
        self.err, self.out = err or sys.stderr, out or sys.stdout
        self.tty = self.err.isatty()
        self._last_bar = 0.0

    def json(self, kind: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": kind, **fields}) + "\n")
        self.out.flush()

    def deploy(self, ev: DeployEvent) -> None:
        if self.as_json:
            self.json(event_name(ev), **asdict(ev))
            return
        match ev:
            case StepStarted(step, title):
                self.line(f"… {title}")
            case DownloadProgress(step, done, total, unit, file, rate, eta):
                left = f", {eta:.0f} s left" if eta is not None else ""
                self.bar(f"{step} {file}", done, total, unit,
                         suffix=f" {rate / 2**20:.1f} MiB/s{left}")
            case StepProgress(step, done, total, unit):
                self.bar(step, done, total, unit)
            case StepLog(step, line):
                if not self.tty:
                    self.line(f"  {step}: {line}")
            case StepFinished(step, outcome, detail, seconds):
                mark = {"done": "✓", "skipped": "↷", "failed": "✗"}[outcome]
                self.line(f"{mark} {step} {outcome} ({seconds:.1f} s) {detail}".rstrip())
            case CostUpdate(hourly, so_far, idle):
                stop = f", idle stop in {idle // 60} min" if idle is not None else ""
                self.line(f"$ {hourly:.3f}/h, ${so_far:.2f} so far{stop}")

    def worker(self, ev: dict[str, Any]) -> None:
        if self.as_json:
            self.json(ev["type"], **{k: v for k, v in ev.items() if k not in ("type", "png")})
            return
        if ev["type"] == "progress":
            self.bar(f"image {ev['index'] + 1}", ev["step"], ev["total"], "steps")
        elif ev["type"] == "image":
            self.out.write(ev["path"] + "\n")
            self.out.flush()
        elif ev["type"] == "done" and ev["cancelled"]:
            self.line(f"cancelled; {ev['images']} finished image(s) kept")

    def using(self, target: Target) -> None:
        """Which deployment this run uses, and why (a bare command uses the default one)."""
        if self.as_json:
            self.json("deployment", name=target.name, option=target.option,
                      chosen_by=target.chosen_by)
        elif target.chosen_by != "name":
            self.line(f"using {target.describe()} (--name picks another)")

    def bar(self, label: str, done: int, total: int | None, unit: str, suffix: str = "") -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last_bar < (0.1 if self.tty else 2.0):
            return
        self._last_bar = now
        if total:
            width = 30
            fill = int(width * done / total)
            amount = (f"{done / 2**20:.0f}/{total / 2**20:.0f} MiB" if unit == "bytes"
                      else f"{done}/{total}")
            text = f"  {label} [{'#' * fill}{'.' * (width - fill)}] {amount}{suffix}"
        else:
            text = f"  {label} {done} {unit}{suffix}"
        if self.tty:
            self.err.write("\r" + text + ("\n" if final else ""))
            self.err.flush()
        else:
            self.line(text)

    def warn(self, text: str) -> None:
        if self.as_json:
            self.json("warning", message=text)
        else:
            self.line(f"warning: {text}")

    def line(self, text: str) -> None:
        self.err.write(printable(text) + "\n")
        self.err.flush()


def printable(text: str) -> str:
    """Text as it may reach a terminal, whatever a file put in it (a PNG's text chunks, a build's
    log): control characters shown escaped as repr shows them, so no escape sequence acts and no
    newline forges a line of its own."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
