"""The provisioning steps, in order, each pending, running, done, skipped or failed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

MARKS = {
    "pending": ("○", "dim"),
    "running": ("◐", "bold yellow"),
    "done": ("✓", "green"),
    "skipped": ("↷", "cyan"),
    "failed": ("✗", "bold red"),
}


class StepRow(Static):
    def __init__(self, name: str, title: str) -> None:
        super().__init__(id=f"step-{name}", classes="step-row")
        self.step_name = name
        self.title = title
        self.state = "pending"
        self.detail = ""
        self.seconds: float | None = None

    def on_mount(self) -> None:
        # A step can start and finish before its row is mounted: show where it is now.
        self.set_state(self.state, self.detail, self.seconds)

    def set_state(self, state: str, detail: str = "", seconds: float | None = None) -> None:
        self.state, self.detail, self.seconds = state, detail, seconds
        mark, style = MARKS[state]
        weight = "bold" if state == "running" else ""
        text = Text.assemble((f"{mark} ", style), (self.title, weight))
        text.append(f"  {state}", style)
        if seconds is not None:
            text.append(f" ({seconds:.1f} s)", "dim")
        if detail:
            text.append(f"  {detail}", "dim" if state != "failed" else "red")
        self.update(text)
