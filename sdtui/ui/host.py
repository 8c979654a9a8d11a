"""What the screens ask of the app, declared below both: the screens are typed against
`SdtuiHost`, the app implements it, so no screen imports the app module (not even for types).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.app import App

if TYPE_CHECKING:
    from sdtui.client import WorkerClient
    from sdtui.deploy.base import CostUpdate, Deployment
    from sdtui.ui.core import Services


class SdtuiHost(App[int]):
    """The app's flow as the screens see it."""

    services: Services
    deployment: Deployment | None
    worker_state: str  # what the status bar shows: ready, generating, provisioning, ...
    cost_label: str
    api_label: str  # `sdtui serve` started from the app: its URL, auth and queue

    @property
    def image_class(self) -> type:
        raise NotImplementedError

    def start_provision(self, deployment: Deployment,
                        on_ready: Callable[[Deployment], None] | None = None, *,
                        rerun: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def start_batch_run(self, deployment: Deployment, lines: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def open_run(self, deployment: Deployment, *,
                 lines: list[dict[str, Any]] | None = None) -> None:
        raise NotImplementedError

    def open_prompt(self, deployment: Deployment, client: WorkerClient,
                    rerun: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def back_to_deployments(self, detached: bool = False) -> None:
        raise NotImplementedError

    def show_state(self, deployment: Deployment, state: str) -> None:
        raise NotImplementedError

    def report_cost(self, update: CostUpdate | None) -> None:
        raise NotImplementedError

    def stop_cost(self) -> None:
        raise NotImplementedError

    def confirm_teardown(self, deployment: Deployment) -> None:
        raise NotImplementedError

    def toggle_serving(self, deployment: Deployment) -> None:
        raise NotImplementedError

    def leave(self) -> None:
        raise NotImplementedError
