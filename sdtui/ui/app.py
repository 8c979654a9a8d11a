"""`sdtui` without --no-ui: the keyboard-driven terminal app.

Screens: deployments (choose, resume, tear down) → provisioning → prompt panel; a teardown
modal from any of them. The app only calls the core (see core.Services).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen

from sdtui import errors
from sdtui.deploy.base import CostUpdate, Deployment
from sdtui.settings import Given
from sdtui.ui.core import Services
from sdtui.ui.cost import CostMeter
from sdtui.ui.images import ImageSupport
from sdtui.ui.screens.deploy import DeployScreen

if TYPE_CHECKING:
    from sdtui.client import WorkerClient

# The later screens are imported where they are opened: the first frame needs only DeployScreen.

COST_POLL_S = 15.0  # each poll asks EC2 and reads the instance's activity file over SSH


class SdtuiApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "sdtui"
    deployment_label = reactive("")
    worker_state = reactive("")
    cost_label = reactive("")

    def __init__(self, services: Services | None = None,
                 images: ImageSupport | None = None) -> None:
        super().__init__()
        self.services = services or Services()
        self.images = images or ImageSupport()
        self.deployment: Deployment | None = None
        self.cost_meter = CostMeter()
        self._cost_poll: Any = None

    def on_mount(self) -> None:
        self.push_screen(DeployScreen())
        self.set_interval(1.0, self._tick_cost)
        self.call_after_refresh(self.images.start)  # a forced renderer loads after the frame

    @property
    def image_class(self) -> type:
        return self.images.widget_class()

    # --- flow ------------------------------------------------------------------------------------

    def _use(self, deployment: Deployment) -> None:
        if deployment is not self.deployment:
            self.stop_cost()
        self.deployment = deployment
        self.deployment_label = f"{deployment.name} ({deployment.option})"
        if callable(getattr(deployment, "cost_update", None)) and self._cost_poll is None:
            self._cost_poll = self.set_interval(COST_POLL_S, self._poll_cost)

    def start_provision(self, deployment: Deployment,
                        on_ready: Callable[[Deployment], None] | None = None) -> None:
        """Provision, then open the prompt panel (or call `on_ready`: a scale-out's run)."""
        self._use(deployment)
        try:
            self.services.remember_use(deployment)  # the default deployment, for --no-ui too
        except errors.SdtuiError as exc:
            self.notify(f"could not record the default deployment: {exc}", severity="warning")
        from sdtui.ui.screens.provision import ProvisionScreen

        self._to_deployments()
        self.push_screen(ProvisionScreen(deployment, on_ready=on_ready))

    def start_batch_run(self, deployment: Deployment, lines: list[dict[str, Any]]) -> None:
        """A scale-out: provision (after the estimate the form showed), then submit and watch."""
        self.start_provision(deployment, on_ready=lambda d: self.open_run(d, lines=lines))

    def open_run(self, deployment: Deployment, *, lines: list[dict[str, Any]] | None = None
                 ) -> None:
        """Watch a scale-out run: the one to submit (`lines`), else the deployment's last."""
        from sdtui.ui.screens.run import RunScreen

        self._use(deployment)
        screen = RunScreen(deployment, lines=lines, out_dir=self.services.outputs())
        if len(self.screen_stack) > 2:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def open_prompt(self, deployment: Deployment, client: WorkerClient) -> None:
        from sdtui.ui.screens.prompt import PromptScreen

        self._use(deployment)
        self.switch_screen(PromptScreen(deployment, client))

    def back_to_deployments(self) -> None:
        self.worker_state = ""
        self._to_deployments()

    # --- Option A's cost: reported while provisioning, polled afterwards --------------------------

    def report_cost(self, update: CostUpdate | None) -> None:
        if update is None:
            self.cost_meter.clear()
        else:
            self.cost_meter.update(update)
        self._tick_cost()

    def stop_cost(self) -> None:
        if self._cost_poll is not None:
            self._cost_poll.stop()
            self._cost_poll = None
        self.report_cost(None)

    def _tick_cost(self) -> None:
        self.cost_label = self.cost_meter.label()

    def _poll_cost(self) -> None:
        from sdtui.ui.screens.provision import ProvisionScreen

        busy = isinstance(self.screen, ProvisionScreen) and self.screen.running
        if self.deployment is not None and not busy:  # one thread at a time uses its clients
            self._fetch_cost(self.deployment)

    @work(thread=True, exclusive=True, group="cost", exit_on_error=False)
    def _fetch_cost(self, deployment: Any) -> None:
        try:
            update = deployment.cost_update()
        except Exception:  # a missed poll is retried at the next one
            return
        self.call_from_thread(self.report_cost, update)

    def _to_deployments(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, DeployScreen):
            self.pop_screen()

    def confirm_teardown(self, deployment: Deployment) -> None:
        self._teardown_status(deployment)

    @work(thread=True, exclusive=True, group="teardown-status", exit_on_error=False)
    def _teardown_status(self, deployment: Deployment) -> None:
        try:
            status = deployment.status()
        except errors.SdtuiError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", title="Teardown")
            return
        self.call_from_thread(self._ask_teardown, deployment, status)

    def _ask_teardown(self, deployment: Deployment, status: Any) -> None:
        from sdtui.ui.screens.provision import ProvisionScreen
        from sdtui.ui.screens.teardown import TeardownModal

        def confirmed(purge: bool | None) -> None:
            if purge is None:
                return
            self._use(deployment)
            from sdtui.ui.screens.prompt import PromptScreen

            if isinstance(self.screen, PromptScreen):
                self.screen.session.client.close()
            self._to_deployments()
            self.push_screen(ProvisionScreen(deployment, mode="teardown", purge=purge))

        self.push_screen(TeardownModal(status, self.services.outputs()), confirmed)

    # --- command palette: an entry for every action of the screen --------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in getattr(screen, "PALETTE", ()):
            yield SystemCommand(title, help_text, partial(screen.run_action, action))


def run_app(given: Given | None = None, images: ImageSupport | None = None,
            out_dir: Path | None = None) -> int:
    images = images or ImageSupport().start()
    images.before_app_runs()
    app = SdtuiApp(Services(out_dir=out_dir, given=given or Given()), images)
    result = app.run()
    return errors.EXIT_OK if result is None else result
