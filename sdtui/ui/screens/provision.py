"""Provisioning (or tearing down) live: the ordered steps, a progress bar, the log, elapsed time
and, for Option A, the cost; cancel with Escape or Ctrl-C; retry or tear down after a failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, ProgressBar, RichLog, Static
from textual.worker import Worker, WorkerState

from sdtui.deploy.base import (
    CostUpdate,
    Deployment,
    StepFinished,
    StepLog,
    StepProgress,
    StepStarted,
    TeardownReport,
)
from sdtui.errors import Interrupted, SdtuiError
from sdtui.ui.cost import format_duration
from sdtui.ui.fixes import in_app
from sdtui.ui.keys import TEARDOWN_BINDING
from sdtui.ui.pump import EventPump
from sdtui.ui.widgets.status_bar import StatusBar
from sdtui.ui.widgets.steps import StepRow

if TYPE_CHECKING:
    from sdtui.client import WorkerClient
    from sdtui.ui.host import SdtuiHost

FRAME_S = 1 / 15


def _coalesce_key(ev: object) -> tuple[str, ...] | None:
    if isinstance(ev, StepProgress):
        return ("progress", ev.step)
    if isinstance(ev, CostUpdate):
        return ("cost",)
    return None


def format_amount(done: int, total: int | None, unit: str) -> str:
    if unit == "bytes":
        mib = f"{done / 2**20:.1f}"
        return f"{mib} / {total / 2**20:.1f} MiB" if total else f"{mib} MiB"
    return f"{done} / {total} {unit}" if total else f"{done} {unit}"


class ProvisionScreen(Screen[None]):
    HELP_TITLE = "provisioning"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel",
                tooltip="Stop after the current step; what was made is kept (Retry resumes)"),
        Binding("ctrl+c", "cancel", "Cancel", show=False, priority=True,
                tooltip="The same as escape while the steps run"),
        Binding("escape", "back", "Back", show=False,
                tooltip="Once the steps have stopped: back to the deployment screen"),
        Binding("ctrl+r", "retry", "Retry",
                tooltip="Run the steps again after a failure; finished ones are skipped"),
        TEARDOWN_BINDING,
        Binding("ctrl+b", "back", "Back", tooltip="Back to the deployment screen"),
    ]
    PALETTE = [
        ("Cancel provisioning", "Stop after the current step; nothing is lost", "cancel"),
        ("Retry provisioning", "Run the steps again; finished ones are skipped", "retry"),
        ("Tear down this deployment", "Show what will be deleted, then delete it", "teardown"),
        ("Back to deployments", "Return to the deployment screen", "back"),
    ]

    app: SdtuiHost

    def __init__(self, deployment: Deployment, mode: Literal["provision", "teardown"] = "provision",
                 purge: bool = False, then_quit: bool = False,
                 on_ready: Callable[[Deployment], None] | None = None,
                 rerun: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.deployment = deployment
        self.on_ready = on_ready  # what follows provisioning (default: the prompt panel)
        self.rerun = rerun  # the request the prompt panel sends once open
        self.mode = mode
        self.purge = purge
        self.then_quit = then_quit  # the quit dialog's "tear down now": leave once it is done
        self.pump = EventPump(_coalesce_key)
        self.cancel_event = threading.Event()
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.running = False
        self.failed = False
        self.report: TeardownReport | None = None
        self.busy_state = "provisioning" if mode == "provision" else "tearing down"
        verb = "Provisioning" if mode == "provision" else "Tearing down"
        self.title = f"sdtui — {verb} {deployment.name} ({deployment.option})"

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="provision-body"):
            yield Vertical(id="step-list")
            with Horizontal(id="progress-row"):
                yield Label("", id="progress-label")
                yield ProgressBar(id="progress", show_eta=True)
            with Horizontal(id="meta-row"):
                yield Static("", id="elapsed")
                yield Static("", id="cost")
            yield Static("", id="error")
            with Horizontal(id="failure-actions"):
                yield Button("Retry (ctrl+r)", id="retry", variant="primary")
                yield Button("Tear down (ctrl+t)", id="teardown", variant="error")
                yield Button("Back (ctrl+b)", id="back")
            yield RichLog(id="log", wrap=True, markup=False, max_lines=5000)
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#progress-row").display = False
        self.query_one("#cost").display = False
        self.query_one("#failure-actions").display = False
        self.set_interval(FRAME_S, self._frame)
        self.start()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the keys that act now: cancel while running; retry, tear down and back after."""
        if action == "cancel":
            return self.running and self.mode == "provision"
        if action == "retry":
            return not self.running and self.mode == "provision" and self.failed
        if action == "teardown":
            return not self.running and (self.failed or bool(self.report and self.report.left))
        if action == "back":
            return not self.running
        return True

    # --- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self.cancel_event = threading.Event()
        self.started, self.finished_at, self.running = time.monotonic(), None, True
        self.failed = False
        self.refresh_bindings()
        self.query_one("#error", Static).update("")
        self.query_one("#failure-actions").display = False
        self.app.worker_state = self.busy_state
        if self.mode == "provision":
            try:
                plan = self.deployment.plan()
            except SdtuiError as exc:
                self._failed(exc)
                return
            for step in plan:  # a retry resets the rows the first run mounted
                self._row(step.name, step.title).set_state("pending")
            self.run_worker(self._provision, thread=True, exit_on_error=False,
                            group="provision", name="provision")
        else:
            self.run_worker(self._teardown, thread=True, exit_on_error=False,
                            group="provision", name="teardown")

    def _provision(self) -> WorkerClient | None:
        try:
            self.deployment.provision(self.pump.put, self.cancel_event)
        finally:  # the default deployment once it exists, for --no-ui too
            self._remember()
        return None if self.on_ready else self.deployment.connect()

    def _remember(self) -> None:
        try:
            self.app.services.remember_use(self.deployment)
        except SdtuiError as exc:
            self.app.call_from_thread(self.app.notify, f"could not record the default "
                                      f"deployment: {exc}", severity="warning")

    def _teardown(self) -> TeardownReport:
        return self.deployment.teardown(self.pump.put, purge=self.purge)

    def _frame(self) -> None:
        events = self.pump.drain()
        for ev in events:
            self.apply(ev)
        if events:  # the log's own scroll can stop short when many lines come in one frame
            log = self.query_one("#log", RichLog)
            self.call_after_refresh(log.scroll_end, animate=False)
        end = self.finished_at or time.monotonic()
        self.query_one("#elapsed", Static).update(f"elapsed {format_duration(end - self.started)}")
        cost = self.query_one("#cost", Static)
        if self.app.cost_label and self.deployment.option == "aws":
            cost.display = True
            cost.update(self.app.cost_label)

    def _row(self, step: str, title: str | None = None) -> StepRow:
        rows = self.query(f"#step-{step}")
        if rows:
            return rows.first(StepRow)
        row = StepRow(step, title or step)
        self.query_one("#step-list", Vertical).mount(row)
        return row

    def apply(self, ev: object) -> None:
        log = self.query_one("#log", RichLog)
        match ev:
            case StepStarted(step, title):
                self._row(step, title).set_state("running")
                self.query_one("#progress-row").display = False
                log.write(Text(f"── {title}", "bold"))
            case StepProgress(step, done, total, unit):
                row = self._row(step)
                self.query_one("#progress-row").display = True
                self.query_one("#progress-label", Label).update(
                    f"{row.title}: {format_amount(done, total, unit)} ")
                self.query_one("#progress", ProgressBar).update(total=total, progress=done)
            case StepLog(step, line):
                log.write(f"  {step}: {line}")
            case StepFinished(step, outcome, detail, seconds):
                self._row(step).set_state(outcome, detail, seconds)
                self.query_one("#progress-row").display = False
                log.write(Text(f"   {outcome}: {detail}", "red" if outcome == "failed" else "dim"))
            case CostUpdate():
                self.app.report_cost(ev)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "provision" or event.state in (WorkerState.PENDING,
                                                                WorkerState.RUNNING):
            return
        self._frame()  # apply the last events before the outcome
        self.running = False
        self.finished_at = time.monotonic()
        self.refresh_bindings()
        if event.state == WorkerState.SUCCESS:
            if self.mode == "provision" and self.on_ready is not None:
                self.on_ready(self.deployment)
            elif self.mode == "provision":
                self.app.open_prompt(self.deployment, event.worker.result, self.rerun)
            else:
                self._torn_down(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self._failed(event.worker.error)
        else:
            self._failed(Interrupted("cancelled"))

    def _failed(self, exc: BaseException | None) -> None:
        self.running = False
        self.finished_at = self.finished_at or time.monotonic()  # the plan failed: never ran
        self.failed = True
        self.refresh_bindings()
        self.app.worker_state = "cancelled" if isinstance(exc, Interrupted) else "failed"
        if isinstance(exc, SdtuiError):
            text = Text(f"✗ {exc.message}", "bold red")
            if exc.fix:
                text.append(f"\n  fix: {in_app(exc.fix)}", "yellow")
        else:
            text = Text(f"✗ {type(exc).__name__}: {exc}", "bold red")
        self.query_one("#error", Static).update(text)
        self.query_one("#failure-actions").display = True
        self.query_one("#retry", Button).display = self.mode == "provision"
        self.query_one("#retry" if self.mode == "provision" else "#back", Button).focus()

    def _torn_down(self, report: TeardownReport) -> None:
        self.report = report
        self.refresh_bindings()
        self.app.worker_state = "torn down"
        if not report.left:
            self.app.stop_cost()
            if self.then_quit:
                self.app.exit()
                return
        lines = [f"removed {r.kind} {r.id}" for r in report.removed]
        lines += [f"kept {r.kind} {r.id}" for r in report.kept]
        lines += [f"COULD NOT DELETE {r.kind} {r.id} {r.note}" for r in report.left]
        style = "bold red" if report.left else "green"
        summary = "\n".join(lines) or "nothing to remove"
        self.query_one("#error", Static).update(Text(summary, style))
        self.query_one("#failure-actions").display = True
        self.query_one("#retry", Button).display = False
        self.query_one("#teardown", Button).display = bool(report.left)
        self.query_one("#back", Button).focus()

    # --- actions -----------------------------------------------------------------------------

    def action_cancel(self) -> None:
        if self.running and self.mode == "provision":
            self.cancel_event.set()
            self.query_one("#log", RichLog).write(
                Text("cancelling after the current step…", "yellow"))

    @on(Button.Pressed, "#retry")
    def action_retry(self) -> None:
        if not self.running and self.mode == "provision":
            self.start()

    @on(Button.Pressed, "#teardown")
    def action_teardown(self) -> None:
        if self.running:
            self.notify("Cancel first (Escape), then tear down.", severity="warning")
            return
        self.app.confirm_teardown(self.deployment)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        if self.running:
            self.notify("Still running: Escape cancels first.", severity="warning")
            return
        self.app.back_to_deployments()
