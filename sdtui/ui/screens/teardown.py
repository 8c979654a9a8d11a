"""Confirm a teardown: what will be deleted and what is kept (models and images, by default)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, Static

from sdtui.deploy.base import DeploymentStatus
from sdtui.ui.fixes import in_app


def describe(status: DeploymentStatus, outputs: Path, purge: bool) -> Text:
    text = Text()
    deleted = [r for r in status.resources if purge or not r.kept_on_teardown]
    kept = [r for r in status.resources if not purge and r.kept_on_teardown]
    text.append("Will be deleted:\n", "bold red")
    for r in deleted:
        text.append(f"  ✗ {r.kind} {r.id} {r.state}\n".rstrip() + "\n")
    if not deleted:
        text.append("  (nothing running)\n", "dim")
    if status.hourly_usd:
        spent = (f", ${status.cost_so_far_usd:.2f} spent so far"
                 if status.cost_so_far_usd is not None else "")
        text.append(f"  this stops ${status.hourly_usd:.3f}/h{spent}\n", "yellow")
    text.append("Kept:\n", "bold green")
    for r in kept:
        text.append(f"  ✓ {r.kind} {r.id}  {in_app(r.note)}".rstrip() + "\n")
    text.append(f"  ✓ your images in {outputs}\n")
    return text


class TeardownModal(ModalScreen[bool | None]):
    """Returns the purge choice when confirmed, None when cancelled."""

    HELP_TITLE = "tear down"
    # The dialogs' one pattern: each button names its key, escape cancels, and the focus
    # starts on the choice that deletes nothing.
    BINDINGS = [
        Binding("t", "confirm", "Tear down", tooltip="Tear down (and the ticked extras)"),
        Binding("escape", "dismiss_modal", "Cancel", tooltip="Keep everything as it is"),
    ]

    def __init__(self, status: DeploymentStatus, outputs: Path,
                 other_clients: list[str] | None = None) -> None:
        super().__init__()
        self.status = status
        self.outputs = outputs
        self.other_clients = other_clients or []

    def compose(self) -> ComposeResult:
        with Vertical(id="teardown-dialog"):
            yield Label(f"Tear down {self.status.name} ({self.status.option}, "
                        f"{self.status.state})?", id="teardown-title")
            if self.other_clients:
                yield Static(Text(
                    f"! Another client is attached: {'; '.join(self.other_clients)}. Tearing "
                    "down stops the worker it is using.", "bold yellow"), id="teardown-others")
            yield Static(describe(self.status, self.outputs, False), id="teardown-list")
            kept = [r for r in self.status.resources if r.kept_on_teardown]
            if kept:
                what = ("the bucket and its model files" if any(r.kind == "bucket" for r in kept)
                        else "the model volume")
                yield Checkbox(f"Also delete {what}", id="purge")
            with Horizontal(id="teardown-buttons"):
                yield Button("Tear down (t)", id="confirm", variant="error")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Checkbox.Changed, "#purge")
    def _purge_changed(self, event: Checkbox.Changed) -> None:
        self.query_one("#teardown-list", Static).update(
            describe(self.status, self.outputs, event.value))

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        purge = self.query("#purge")
        self.dismiss(bool(purge) and purge.first(Checkbox).value)

    @on(Button.Pressed, "#cancel")
    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
