"""The status bar: which deployment, what the worker is doing, for Option A the cost, and
while the app serves the A1111 API its URL, auth and queue."""

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
        for attr in ("deployment_label", "worker_state", "cost_label", "api_label"):
            self.watch(self.app, attr, lambda _value: self._render_status(), init=False)
        self._render_status()

    def _render_status(self) -> None:
        app = self.app
        parts = [f"deployment: {getattr(app, 'deployment_label', '') or 'none'}",
                 f"worker: {getattr(app, 'worker_state', '') or 'none'}"]
        parts += [label for label in (getattr(app, "cost_label", ""),
                                      getattr(app, "api_label", "")) if label]
        self.update("  │  ".join(parts))
