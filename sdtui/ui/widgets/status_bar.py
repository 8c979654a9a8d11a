"""The status bar: which deployment, what the worker is doing and, for Option A, the cost."""

from __future__ import annotations

from textual.widgets import Static


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar {  /* docks above the Footer (same-edge docks overlap) */
        dock: bottom; height: 1; margin-bottom: 1;
        background: $panel; color: $text-muted; padding: 0 1;
    }
    """

    def on_mount(self) -> None:
        for attr in ("deployment_label", "worker_state", "cost_label"):
            self.watch(self.app, attr, lambda _value: self._render_status(), init=False)
        self._render_status()

    def _render_status(self) -> None:
        app = self.app
        parts = [f"deployment: {getattr(app, 'deployment_label', '') or 'none'}",
                 f"worker: {getattr(app, 'worker_state', '') or 'none'}"]
        cost = getattr(app, "cost_label", "")
        if cost:
            parts.append(cost)
        self.update("  │  ".join(parts))
