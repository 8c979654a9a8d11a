"""F1 or ?: every key of the screen underneath, and a line on each of its fields."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

from sdtui.ui.keys import keys_of

WHERE = {"screen": "this screen", "app": "every screen"}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close help"),
        Binding("f1", "close", "Close help", show=False),
        Binding("question_mark", "close", "Close help", show=False),
        Binding("q", "close", "Close help", show=False),
    ]

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.target = screen

    def compose(self) -> ComposeResult:
        title = getattr(self.target, "HELP_TITLE", type(self.target).__name__)
        with VerticalScroll(id="help-dialog"):
            yield Label(f"Help — {title}", id="help-title")
            yield Static(self.keys_table(), id="help-keys")
            fields = self.target.field_help() if hasattr(self.target, "field_help") else []
            if fields:
                yield Label("Fields", classes="section")
                yield Static(self.fields_table(fields), id="help-fields")
            families = self.target.family_help() if hasattr(self.target, "family_help") else []
            if families:
                yield Label("Model families: what each takes, where it runs", classes="section")
                yield Static(self.fields_table(families), id="help-families")
            yield Label("escape, F1 or q closes this help.", id="help-close")

    def keys_table(self) -> Table:
        table = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold dim")
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("what it does", ratio=1)
        table.add_column("where it works", style="dim", no_wrap=True)
        seen: set[tuple[str, str]] = set()
        for k in keys_of(self.app, self.target):
            # The app's keys as they act now: one ctrl+q (while generating, or not).
            if (k.key, k.action) in seen or (
                    k.where == "app" and self.app.check_action(k.action, ()) is False):
                continue
            seen.add((k.key, k.action))
            table.add_row(k.key, k.description, WHERE.get(k.where, f"in the {k.where}"))
        for key, text, where in getattr(self.target, "HELP_KEYS", ()):
            table.add_row(key, text, where)
        return table

    @staticmethod
    def fields_table(fields: list[tuple[str, str]]) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1)
        for label, text in fields:
            table.add_row(Text(label), Text(text))  # "[dev]" is no markup
        return table

    def action_close(self) -> None:
        self.dismiss(None)
