"""Choose Option A or B or the scale-out, fill its form, see what is ready (and, for the
scale-out, what the run will cost), resume or tear down what exists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    RadioButton,
    RadioSet,
    Static,
)

from sdtui.errors import SdtuiError
from sdtui.ledger import Ledger
from sdtui.ui.checks import Check
from sdtui.ui.forms import FIELDS, Option, field_errors
from sdtui.ui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from sdtui.ui.app import SdtuiApp

OPTION_TITLES: dict[Option, str] = {
    "aws": "Option A — cloud: AWS GPU instance + S3",
    "local": "Option B — local: Docker volume on this machine",
    "batch": "Batch — scale-out: a prompt file over N GPUs (AWS Batch)",
}
CHECK_DELAY_S = 0.6


class DeployScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+s", "provision", "Provision"),
        Binding("ctrl+r", "resume", "Resume selected"),
        Binding("ctrl+t", "teardown", "Tear down selected"),
        Binding("ctrl+l", "checks", "Re-check"),
    ]
    PALETTE = [
        ("Provision", "Provision the chosen option with this form", "provision"),
        ("Resume selected deployment", "Provision again (existing work is skipped)", "resume"),
        ("Tear down selected deployment", "Show what will be deleted, then delete it", "teardown"),
        ("Re-run the checks", "Docker engine, GPU runtime, AWS identity, model files", "checks"),
        ("Choose Option A (cloud)", "AWS GPU instance + S3", "choose('aws')"),
        ("Choose Option B (local)", "Docker on this machine", "choose('local')"),
        ("Choose Batch (scale-out)", "A prompt file over N GPUs with AWS Batch",
         "choose('batch')"),
    ]

    app: SdtuiApp

    def __init__(self) -> None:
        super().__init__()
        self.option: Option = "local"
        self._initial_values: dict[Option, dict[str, Any]] = {}
        self._ledgers: list[Ledger] = []
        self._check_timer: Any = None
        self.title = "sdtui — choose a deployment"

    def compose(self) -> ComposeResult:
        self.option = self.app.services.default_option(self.app.services.given)
        yield Header()
        with Horizontal(id="deploy-body"):
            with VerticalScroll(id="deploy-form"):
                with RadioSet(id="option"):
                    for option, title in OPTION_TITLES.items():
                        yield RadioButton(title, id=f"choose-{option}", value=option == self.option)
                for option in FIELDS:  # the other option's form is built when it is chosen
                    yield Vertical(*self._form(option) if option == self.option else (),
                                   id=f"form-{option}", classes="form")
                yield Static("", id="form-error", classes="field-error")
                yield Button("Provision  (ctrl+s)", id="provision", variant="primary")
            with Vertical(id="deploy-side"):
                yield Label("Checks", classes="section")
                yield Static("checking…", id="checks")
                yield Label("Existing deployments", classes="section")
                yield DataTable(id="deployments", cursor_type="row", zebra_stripes=True)
        yield StatusBar()
        yield Footer()

    def _form(self, option: Option) -> list[Widget]:
        """The option's fields, filled in from the flags, the ledger (or the values last used),
        the config file and the defaults: the core's one precedence rule."""
        if option not in self._initial_values:
            self._initial_values[option] = self.app.services.form_values(
                option, self.app.services.given)
        values = self._initial_values[option]
        widgets: list[Widget] = []
        for f in FIELDS[option]:
            value = values.get(f.name)
            if f.kind == "bool":
                widgets.append(Checkbox(f.label, bool(value), id=f"{option}-{f.name}"))
            else:
                widgets.append(Label(f.label, classes="field-label"))
                widgets.append(Input("" if value is None else str(value),
                                     placeholder=f.placeholder, id=f"{option}-{f.name}"))
            widgets.append(Static("", id=f"{option}-{f.name}-error", classes="field-error"))
        return widgets

    def on_mount(self) -> None:
        table = self.query_one("#deployments", DataTable)
        table.add_columns("name", "option", "state", "resources")
        self.choose(self.option, check=False)
        self.refresh_deployments(states=False)
        # The checks and states load the Docker SDK and boto3: after the first frame is shown.
        self.call_after_refresh(self._after_first_frame)

    def _after_first_frame(self) -> None:
        self.action_checks()
        self._fetch_states(list(self._ledgers))

    def on_screen_resume(self) -> None:
        self.refresh_deployments()

    # --- the form ----------------------------------------------------------------------------

    def values(self, option: Option | None = None) -> dict[str, Any]:
        option = option or self.option
        out: dict[str, Any] = {}
        for f in FIELDS[option]:
            widget = self.query_one(f"#{option}-{f.name}")
            out[f.name] = widget.value.strip() if isinstance(widget, Input) else widget.value
        return out

    def choose(self, option: Option, check: bool = True) -> None:
        self.option = option
        form = self.query_one(f"#form-{option}", Vertical)
        if not form.children:
            form.mount_all(self._form(option))
        for other in FIELDS:
            self.query_one(f"#form-{other}").display = other == option
        self.query_one(f"#choose-{option}", RadioButton).value = True
        self.query_one("#form-error", Static).update("")
        if check:
            self.action_checks()

    def action_choose(self, option: Option) -> None:
        self.choose(option)

    @on(RadioSet.Changed, "#option")
    def _option_changed(self, event: RadioSet.Changed) -> None:
        option: Option = str(event.pressed.id).removeprefix("choose-")  # type: ignore[assignment]
        if option != self.option:
            self.choose(option)

    @on(Input.Changed)
    def _field_changed(self, event: Input.Changed) -> None:
        error = self.query(f"#{event.input.id}-error")
        if error:
            error.first(Static).update("")
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(CHECK_DELAY_S, self.action_checks)

    def show_errors(self, errors: dict[str, str]) -> None:
        for f in FIELDS[self.option]:
            message = errors.get(f.name, "")
            self.query_one(f"#{self.option}-{f.name}-error", Static).update(
                Text(f"✗ {message}", "red") if message else "")

    @on(Button.Pressed, "#provision")
    @on(Input.Submitted)
    def action_provision(self) -> None:
        values = self.values()
        errors = field_errors(self.option, values)
        self.show_errors(errors)
        form_error = self.query_one("#form-error", Static)
        if errors:
            form_error.update(Text("Fix the fields marked ✗ first.", "red"))
            first = next(f for f in FIELDS[self.option] if f.name in errors)
            self.query_one(f"#{self.option}-{first.name}").focus()
            return
        try:
            lines = self.app.services.batch_lines(values) if self.option == "batch" else None
            deployment = self.app.services.make_deployment(self.option, values)
        except SdtuiError as exc:
            form_error.update(Text(f"✗ {exc}", "red"))
            return
        form_error.update("")
        if lines is not None:
            self.app.start_batch_run(deployment, lines)
        else:
            self.app.start_provision(deployment)

    # --- live checks -------------------------------------------------------------------------

    def action_checks(self) -> None:
        self.query_one("#checks", Static).update(Text("checking…", "dim"))
        self._run_checks(self.option, self.values())

    @work(thread=True, exclusive=True, group="checks")
    def _run_checks(self, option: Option, values: dict[str, Any]) -> None:
        checks = self.app.services.live_checks(option, values)
        self.app.call_from_thread(self._show_checks, checks)

    def _show_checks(self, checks: list[Check]) -> None:
        text = Text()
        for c in checks:
            text.append("✓ " if c.ok else "✗ ", "green" if c.ok else "red")
            text.append(c.name, "bold")
            text.append(f"  {c.detail}\n", "dim")
        self.query_one("#checks", Static).update(text)

    # --- existing deployments ----------------------------------------------------------------

    def refresh_deployments(self, states: bool = True) -> None:
        self._ledgers = self.app.services.list_deployments()
        table = self.query_one("#deployments", DataTable)
        table.clear()
        for ledger in self._ledgers:
            kinds = ", ".join(f"{e.kind} {e.id}" for e in ledger.resources()) or "-"
            table.add_row(ledger.name, ledger.option, "…", kinds, key=ledger.name)
        if not self._ledgers:
            table.add_row("(none yet)", "", "", "")
        if states:
            self._fetch_states(list(self._ledgers))

    @work(thread=True, exclusive=True, group="deployment-states")
    def _fetch_states(self, ledgers: list[Ledger]) -> None:
        for ledger in ledgers:
            try:
                state = self.app.services.resume_deployment(ledger).status().state
            except SdtuiError as exc:
                state = f"unknown ({exc.message})"
            except Exception as exc:
                state = f"unknown ({exc})"
            self.app.call_from_thread(self._set_state, ledger.name, state)

    def _set_state(self, name: str, state: str) -> None:
        table = self.query_one("#deployments", DataTable)
        if name in {row.value for row in table.rows}:
            table.update_cell(name, table.ordered_columns[2].key, state)

    def _selected(self) -> Ledger | None:
        table = self.query_one("#deployments", DataTable)
        if not self._ledgers:
            self.notify("There are no deployments yet.", severity="warning")
            return None
        return self._ledgers[min(table.cursor_row, len(self._ledgers) - 1)]

    def _selected_deployment(self) -> Any:
        ledger = self._selected()
        if ledger is None:
            return None
        try:
            return self.app.services.resume_deployment(ledger)
        except SdtuiError as exc:
            self.query_one("#form-error", Static).update(Text(f"✗ {exc}", "red"))
            return None

    def action_resume(self) -> None:
        deployment = self._selected_deployment()
        if deployment is not None and deployment.option == "batch":
            self.app.open_run(deployment)  # its last run, watched again
        elif deployment is not None:
            self.app.start_provision(deployment)

    def action_teardown(self) -> None:
        deployment = self._selected_deployment()
        if deployment is not None:
            self.app.confirm_teardown(deployment)

    @on(DataTable.RowSelected, "#deployments")
    def _row_selected(self) -> None:
        self.action_resume()
