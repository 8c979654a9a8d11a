"""A yes/no question before something that cannot be undone."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmModal(ModalScreen[bool]):
    HELP_TITLE = "confirm"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", tooltip="Do it"),
        Binding("n", "answer(False)", "No", tooltip="Leave everything as it is"),
        Binding("escape", "answer(False)", "Cancel", tooltip="The same as n"),
    ]

    def __init__(self, title: str, detail: str, yes: str) -> None:
        super().__init__()
        self.question, self.detail, self.yes = title, detail, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Label(self.question, id="confirm-title")
            yield Static(self.detail, id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button("Cancel (esc)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
