"""`sdtui` without --no-ui: the keyboard-driven terminal app.

Screens: deployments (choose, resume, tear down) → provisioning → prompt panel; a teardown
modal from any of them; F1 or ? for the keys and fields of the screen; ctrl+q asks before
leaving a deployment running. The app only calls the core (see core.Services).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from sdtui import errors
from sdtui.deploy.base import CostUpdate, Deployment
from sdtui.settings import Given
from sdtui.ui.core import Services
from sdtui.ui.cost import CostMeter
from sdtui.ui.host import SdtuiHost
from sdtui.ui.images import ImageSupport
from sdtui.ui.keys import key_of_action
from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.threads import DaemonThreads

if TYPE_CHECKING:
    from sdtui.client import WorkerClient
    from sdtui.serve.child import ServeChild

# The later screens are imported where they are opened: the first frame needs only DeployScreen.

API_POLL_S = 1.0  # how soon the status bar shows a request sent to the app's `sdtui serve`
COST_POLL_S = 15.0  # each poll asks EC2 and reads the instance's activity file over SSH
# Worker states in which quitting leaves something running.
RUNNING_STATES = ("provisioning", "ready", "generating", "generating (another client)",
                  "running", "running, detached")
BUSY_STATES = ("provisioning", "tearing down")  # a steps thread owns the deployment's clients


class SdtuiApp(SdtuiHost):
    """The screens' host (ui.host): the flow between them, the status bar's state, quitting."""

    CSS_PATH = "app.tcss"
    TITLE = "sdtui"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True,
                tooltip="Quit; first says what keeps running and what it costs"),
        Binding("ctrl+q", "quit_generating", "Quit (the generation goes on)", priority=True,
                tooltip="While generating: quit; the request goes on in the worker and its "
                "images are saved the next time you open this deployment"),
        Binding("f1", "help", "Help", tooltip="This screen's keys and what each field means"),
        Binding("question_mark", "help", "Help", show=False,
                tooltip="The same help (when the cursor is not in a text field)"),
    ]
    deployment_label = reactive("")
    worker_state = reactive("")
    cost_label = reactive("")
    api_label = reactive("")

    def __init__(self, services: Services | None = None,
                 images: ImageSupport | None = None) -> None:
        super().__init__()
        self.services = services or Services()
        self.images = images or ImageSupport()
        self.deployment: Deployment | None = None
        self.cost_meter = CostMeter()
        self.left_running: Deployment | None = None  # what quitting left running
        self._cost_poll: Any = None
        self.serving: ServeChild | None = None

    def on_load(self) -> None:
        # Thread workers on daemon threads: quitting never waits for a generation to finish.
        asyncio.get_running_loop().set_default_executor(DaemonThreads())

    def on_mount(self) -> None:
        self.push_screen(DeployScreen())
        self.set_interval(1.0, self._tick_cost)
        self.set_interval(API_POLL_S, self._poll_api)
        self.call_after_refresh(self.images.start)  # a forced renderer loads after the frame

    @property
    def image_class(self) -> type:
        return self.images.widget_class()

    # --- flow ------------------------------------------------------------------------------------

    def _use(self, deployment: Deployment) -> None:
        if deployment is not self.deployment:
            self.stop_cost()
            self._stop_serving()
        self.deployment = deployment
        self.deployment_label = f"{deployment.name} ({deployment.option})"
        if callable(getattr(deployment, "cost_update", None)) and self._cost_poll is None:
            self._cost_poll = self.set_interval(COST_POLL_S, self._poll_cost)

    def start_provision(self, deployment: Deployment,
                        on_ready: Callable[[Deployment], None] | None = None, *,
                        rerun: dict[str, Any] | None = None) -> None:
        """Provision, then open the prompt panel (or call `on_ready`: a scale-out's run); the
        panel sends `rerun` (a gallery image's request) once it is open."""
        self._use(deployment)
        from sdtui.ui.screens.provision import ProvisionScreen

        self._to_deployments()
        self._open_steps(ProvisionScreen(deployment, on_ready=on_ready, rerun=rerun))

    def _open_steps(self, screen: Any) -> None:
        """The state is busy from the push, not from the screen's mount a frame later: a cost
        poll in between would share the deployment's clients with the steps' thread."""
        self.worker_state = screen.busy_state
        self.push_screen(screen)

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

    def open_prompt(self, deployment: Deployment, client: WorkerClient,
                    rerun: dict[str, Any] | None = None) -> None:
        from sdtui.ui.screens.prompt import PromptScreen

        self._use(deployment)
        self.switch_screen(PromptScreen(deployment, client, rerun))

    def back_to_deployments(self, detached: bool = False) -> None:
        """Back to the deployment screen; `detached`: the worker is left running."""
        if detached:
            self.worker_state = "running, detached"
        elif self.worker_state not in RUNNING_STATES:
            self.worker_state = ""
        self._to_deployments()

    def show_state(self, deployment: Deployment, state: str) -> None:
        """The default deployment's state, as found on the deployment screen."""
        if self.worker_state in ("provisioning", "generating", "tearing down"):
            return
        self._use(deployment)
        self.worker_state = "running" if state == "ready" else state

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
        if self.deployment is not None and self.worker_state not in BUSY_STATES:
            self._fetch_cost(self.deployment)  # one thread at a time uses its clients

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
        others = self.services.other_clients(deployment.name)
        self.call_from_thread(self._ask_teardown, deployment, status, others)

    def _ask_teardown(self, deployment: Deployment, status: Any, others: list[str]) -> None:
        from sdtui.ui.screens.provision import ProvisionScreen
        from sdtui.ui.screens.teardown import TeardownModal

        def confirmed(purge: bool | None) -> None:
            if purge is None:
                return
            self._use(deployment)
            from sdtui.ui.screens.prompt import PromptScreen

            if isinstance(self.screen, PromptScreen):
                self.screen.session.close()
            self._to_deployments()
            self._open_steps(ProvisionScreen(deployment, mode="teardown", purge=purge))

        self.push_screen(TeardownModal(status, self.services.outputs(), others), confirmed)

    # --- serving the A1111 API (sdtui serve, as a child process) ---------------------------------

    def toggle_serving(self, deployment: Deployment) -> None:
        """Start `sdtui serve` for the open deployment, or stop the one running."""
        if self.serving is not None:
            self._stop_serving()
            self.notify("stopped serving the A1111 API")
            return
        from sdtui.serve.child import ServeChild

        self.serving = ServeChild(deployment.name, self.services.outputs(),
                                  self.services.serve_port, on_change=self._serving_changed_soon)
        self.api_label = "api: starting…"
        self.serving.start()

    def _serving_changed_soon(self) -> None:
        with contextlib.suppress(RuntimeError):  # the app has exited: nothing left to show
            self.call_from_thread(self._serving_changed)

    def _serving_changed(self) -> None:
        child = self.serving
        if child is None:
            return
        if child.url is not None:
            self.api_label = f"api: {child.url} ({child.auth})"
            self.notify(f"serving the A1111 API at {child.url} ({child.auth}); f2 stops it")
        elif not child.running:
            self.serving = None
            self.api_label = ""
            self.notify(f"sdtui serve stopped: {child.error or 'it exited'}",
                        severity="error" if child.error else "information")

    def _poll_api(self) -> None:
        if self.serving is not None and self.serving.url is not None:
            self._fetch_queue(self.serving)

    @work(thread=True, exclusive=True, group="api-poll")
    def _fetch_queue(self, child: ServeChild) -> None:
        queued = child.queued()
        if queued is not None and child is self.serving and child.url is not None:
            self.call_from_thread(setattr, self, "api_label",
                                  f"api: {child.url} ({child.auth}) · {queued} queued")

    def _stop_serving(self) -> None:
        child, self.serving = self.serving, None
        self.api_label = ""
        if child is not None:
            child.stop(wait=False)

    # --- help, and the command palette with each command's key ----------------------------------

    def action_help(self) -> None:
        from sdtui.ui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # Textual's own Keys panel and Quit would be a second, different help and a quit that
        # does not ask: ours stand in their place.
        yield from (c for c in super().get_system_commands(screen)
                    if c.title not in ("Keys", "Quit"))
        yield SystemCommand("Help", "f1 · This screen's keys and what each field means",
                            self.action_help)
        yield SystemCommand("Quit", "ctrl+q · Quit; first says what keeps running and what it "
                            "costs", self.action_quit)
        for title, help_text, action in getattr(screen, "PALETTE", ()):
            key = key_of_action(self, screen, action)
            shown = f"{key} · {help_text}" if key else help_text
            yield SystemCommand(title, shown, partial(screen.run_action, action))

    # --- quitting: never without saying what keeps running ----------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "quit":
            return self.worker_state != "generating"
        if action == "quit_generating":
            return self.worker_state == "generating"
        return True

    def watch_worker_state(self) -> None:
        self.refresh_bindings()

    async def action_quit_generating(self) -> None:
        await self.action_quit()

    def running_deployment(self) -> Deployment | None:
        return self.deployment if self.worker_state in RUNNING_STATES else None

    async def action_quit(self) -> None:
        from sdtui.ui.screens.quit import QuitModal

        if isinstance(self.screen, QuitModal):
            return
        deployment = self.running_deployment()
        if deployment is None:
            self.leave()
            return
        generating = getattr(self.screen, "generating", False)
        self.push_screen(QuitModal(deployment, self.worker_state, self.cost_label, generating),
                         self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice == "teardown" and self.deployment is not None:
            self._detach()
            from sdtui.ui.screens.provision import ProvisionScreen

            self._to_deployments()
            self._open_steps(ProvisionScreen(self.deployment, mode="teardown", then_quit=True))

    def _detach(self) -> None:
        """Let go of the worker without waiting for anything: the attach socket is closed and
        provisioning is told to stop after its current step."""
        from sdtui.ui.screens.prompt import PromptScreen
        from sdtui.ui.screens.provision import ProvisionScreen

        for screen in self.screen_stack:
            if isinstance(screen, PromptScreen):
                screen.detach()
            elif isinstance(screen, ProvisionScreen) and screen.running:
                screen.cancel_event.set()

    def leave(self) -> None:
        """Quit now, leaving the deployment running: nothing here waits for the worker."""
        self.left_running = self.running_deployment()
        self.exit()
        self._detach()
        self._stop_serving()


def farewell(app: SdtuiApp) -> str | None:
    """The line printed on the way out when the app leaves a deployment running: what runs,
    and the command that stops it."""
    left = app.left_running
    if left is None:
        return None
    cost = f" ({app.cost_label})" if left.option == "aws" and app.cost_label else ""
    return (f"sdtui: {left.name} ({left.option}) is still running{cost}; to stop it: "
            f"sdtui --no-ui --name {left.name} --teardown")


def run(app: SdtuiApp) -> int:
    """Run the app until it quits, and return its exit code."""
    result = app.run()
    line = farewell(app)
    if line:
        print(line, file=sys.stderr)
    # The app's objects die with the process: the interpreter's shutdown collections need not
    # walk them (on a busy machine that took seconds before the shell prompt came back).
    gc.freeze()
    if app.return_code:  # Textual printed the crash; the shell must not read it as success
        return app.return_code
    return errors.EXIT_OK if result is None else result


def run_app(given: Given | None = None, images: ImageSupport | None = None,
            out_dir: Path | None = None) -> int:
    images = images or ImageSupport().start()
    images.before_app_runs()
    return run(SdtuiApp(Services(out_dir=out_dir, given=given or Given()), images))
