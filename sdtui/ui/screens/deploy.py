"""Choose Option A or B or the scale-out, fill its form, see what is ready (and, for the
scale-out, what the run will cost), resume or tear down what exists."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import AwaitMount, Widget
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
    Select,
    Static,
)

from sdtui import recent
from sdtui.errors import SdtuiError
from sdtui.ledger import Damaged, Ledger
from sdtui.ui.checks import Check
from sdtui.ui.fixes import error_text
from sdtui.ui.forms import FIELDS, Option, field_error, field_errors, field_note
from sdtui.ui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from sdtui.ui.host import SdtuiHost

OPTION_TITLES: dict[Option, str] = {
    "aws": "Option A — cloud (AWS GPU, S3)",
    "local": "Option B — local (Docker here)",
    "batch": "Batch — scale-out over N GPUs",
}
CHECK_DELAY_S = 0.6
MARKS = {"ok": ("✓ ", "green"), "warn": ("! ", "yellow"), "fail": ("✗ ", "red")}
ESTIMATE_FIELDS = ("instance_type", "spot", "idle_minutes", "region")
FIX_FIELDS = "Fix the fields marked ✗ first."
# Fields a few characters long: side by side, SHORT_ROW to a row, once the screen is WIDE_COLUMNS.
SHORT_FIELDS = ("profile", "region", "instance_type", "spot", "idle_minutes", "gpus", "steps",
                "width", "height")
SHORT_ROW = 4
WIDE_COLUMNS = 180
CATALOGUE_HELP = ("Models sdtui fetches by name (verified, into the volume): choosing one puts "
                  "its name first in “Model files”; the extra files stay.")
# The scale-out form's run fields kept in recent.json's app table (the settings keep the rest).
BATCH_RUN = "batch_run"
REMEMBERED_RUN = ("prompt_file", "gpus")


class DeployScreen(Screen[None]):
    HELP_TITLE = "choose a deployment"
    BINDINGS = [
        Binding("ctrl+s", "provision", "Provision",
                tooltip="Provision the chosen option with this form (finished steps are skipped)"),
        Binding("ctrl+r", "resume", "Resume",
                tooltip="Resume the deployment selected in Existing deployments"),
        Binding("ctrl+t", "teardown", "Tear down",
                tooltip="Tear down the selected deployment (shows what is deleted and kept)"),
        Binding("ctrl+l", "checks", "Re-check",
                tooltip="Run the checks again: engine, GPU runtime, AWS identity, model files"),
    ]
    # Keys the widgets bring with them (no binding of ours): shown by F1 all the same.
    HELP_KEYS = [
        ("↑ / ↓", "Move in the option list, or in Existing deployments", "the focused list"),
        ("enter", "Choose the highlighted option; on a deployment: resume it", "the focused list"),
        ("tab / shift+tab", "The next / the previous field", "this screen"),
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

    app: SdtuiHost

    def __init__(self) -> None:
        super().__init__()
        self.option: Option = "local"
        self._initial_values: dict[Option, dict[str, Any]] = {}
        self._ledgers: list[Ledger] = []
        self._damaged: list[Damaged] = []
        self._problems: dict[Option, SdtuiError] = {}  # why a form could not be filled in
        self._check_timer: Any = None
        # The last checks shown: for which option and form, and what they found.
        self._checked: tuple[Option, dict[str, Any], list[Check]] | None = None
        self.title = "sdtui — choose a deployment"

    def compose(self) -> ComposeResult:
        self.option = self.app.services.default_option(self.app.services.given)
        yield Header()
        with Horizontal(id="deploy-body"):
            with Vertical(id="deploy-left"):
                with VerticalScroll(id="deploy-form"):
                    with RadioSet(id="option"):
                        for option, title in OPTION_TITLES.items():
                            yield RadioButton(title, id=f"choose-{option}",
                                              value=option == self.option)
                    for option in FIELDS:  # the other option's form is built when chosen
                        yield Vertical(*self._form(option) if option == self.option else (),
                                       id=f"form-{option}", classes="form")
                    yield Static("", id="form-error", classes="field-error")
                    yield Button("Provision  (ctrl+s)", id="provision", variant="primary")
                yield Static("↓ more fields below: scroll or Tab", id="more-below")
            with Vertical(id="deploy-side"):
                yield Label("Checks", classes="section")
                yield Static("checking…", id="checks")
                yield Label("Existing deployments", classes="section")
                yield DataTable(id="deployments", cursor_type="row", zebra_stripes=True)
        yield StatusBar()
        yield Footer(compact=True)

    def _form(self, option: Option) -> list[Widget]:
        """The option's fields, filled in from the flags, the ledger (or the values last used),
        the config file and the defaults: the core's one precedence rule."""
        if option not in self._initial_values:
            try:
                self._initial_values[option] = self.app.services.form_values(
                    option, self.app.services.given)
            except SdtuiError as exc:  # a damaged ledger or config: the form starts empty
                self._initial_values[option] = {}
                self._problems[option] = exc
        values = self._initial_values[option]
        if option == "batch":  # the run's own fields, as last submitted (flags win)
            given = self.app.services.given
            flags = {**given.deployment, **given.generate} if given.option in (None, option) else {}
            kept = recent.load().app.get(BATCH_RUN, {})
            values.update({k: str(v) for k, v in kept.items() if k in REMEMBERED_RUN
                           and flags.get(k) is None and v not in (None, "")})
        widgets: list[Widget] = []
        row: list[Widget] = []  # short fields in a row (side by side on a wide screen)
        for f in FIELDS[option]:
            value = values.get(f.name)
            parts: list[Widget] = []
            if f.kind == "bool":
                field: Widget = Checkbox(f.label, bool(value), id=f"{option}-{f.name}")
            else:
                parts.append(Label(f.label, classes="field-label"))
                field = Input("" if value is None else str(value), placeholder=f.placeholder,
                              id=f"{option}-{f.name}")
            field.tooltip = f.help
            parts += [field, Static("", id=f"{option}-{f.name}-error", classes="field-error")]
            if f.name in SHORT_FIELDS:
                row.append(Vertical(*parts, classes="short-field"))
            if row and (f.name not in SHORT_FIELDS or len(row) == SHORT_ROW):
                widgets.append(Horizontal(*row, classes="short-row"))
                row = []
            if f.name not in SHORT_FIELDS:
                widgets += parts
            if option == "local" and f.name == "models":
                widgets.append(self._catalogue_picker())
        if row:
            widgets.append(Horizontal(*row, classes="short-row"))
        if option == "aws":
            widgets.append(Static("", id="aws-estimate"))
        return widgets

    @staticmethod
    def _catalogue_picker() -> Select[str]:
        """Option B fetches these by name: choosing one puts its name in “Model files”, as
        `--model NAME` does on the command line."""
        from sdtui.fetch.catalogue import CATALOGUE, gating

        picker: Select[str] = Select(
            [(f"{e.name} — {e.title}, {e.size}, {e.licence}, {gating(e)}", e.name)
             for e in CATALOGUE.values()],
            prompt="…or pick a model to fetch", id="local-catalogue")
        picker.tooltip = CATALOGUE_HELP
        return picker

    @on(Select.Changed, "#local-catalogue")
    def _catalogue_picked(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK:
            return
        models = self.query_one("#local-models", Input)
        extras = [p.strip() for p in models.value.split(",")[1:] if p.strip()]
        models.value = ", ".join([str(event.value), *extras])  # the extra files stay

    def field_help(self) -> list[tuple[str, str]]:
        fields = [("Option", "A: an AWS GPU instance with the models in S3 (costs money while "
                   "it runs). B: Docker on this machine (or DOCKER_HOST). Batch: a prompt file "
                   "shared over N GPUs with AWS Batch, each GPU billed only while it works.")]
        fields += [(f.label, f.help) for f in FIELDS[self.option]]
        if self.option == "local":
            fields.append(("Catalogue", CATALOGUE_HELP))
        return fields

    def on_mount(self) -> None:
        table = self.query_one("#deployments", DataTable)
        table.add_columns("name", "option", "state", "resources")
        self.choose(self.option, check=False)
        self.refresh_deployments(states=False)
        for bad in self._damaged:
            self.notify(error_text(bad.error), title="A deployment's ledger is damaged",
                        severity="error", timeout=30)
        options = self.query_one("#option", RadioSet)
        options.focus()
        # RadioSet highlights its first button when mounted: highlight the chosen one.
        options._selected = options.pressed_index
        self.watch(self.query_one("#deploy-form"), "scroll_y", self._hint_more, init=False)
        # The checks and states load the Docker SDK and boto3: after the first frame is shown.
        self.call_after_refresh(self._after_first_frame)

    def _after_first_frame(self) -> None:
        self.action_checks()
        self._fetch_states(list(self._ledgers))
        self._hint_more()

    def on_screen_resume(self) -> None:
        self.refresh_deployments()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE_COLUMNS, "-wide")
        self.call_after_refresh(self._hint_more)

    def _hint_more(self, _: object = None) -> None:
        """Say when fields are below the fold (a short terminal)."""
        form = self.query_one("#deploy-form", VerticalScroll)
        self.query_one("#more-below").display = form.scroll_y < form.max_scroll_y - 1

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
        mounting = form.mount_all(self._form(option)) if not form.children else None
        for other in FIELDS:
            self.query_one(f"#form-{other}").display = other == option
        self.query_one(f"#choose-{option}", RadioButton).value = True
        problem = self._problems.get(option)
        self.query_one("#form-error", Static).update(
            Text(f"✗ {error_text(problem)}", "red") if problem else "")
        self.call_later(self._form_shown, option, mounting, check)

    async def _form_shown(self, option: Option, mounting: AwaitMount | None, check: bool
                          ) -> None:
        """What reads the form's fields waits for them: a row's fields are mounted with it."""
        if mounting is not None:
            await mounting
        if option != self.option:  # chosen away meanwhile
            return
        if option == "aws":
            self.call_after_refresh(self._show_estimate)
        self.call_after_refresh(self._hint_more)
        if check:
            self.action_checks()

    def action_choose(self, option: Option) -> None:
        """From the palette: the form's first field gets the focus, ready to type in."""
        self.choose(option)
        first = f"#{option}-{FIELDS[option][0].name}"
        self.call_after_refresh(lambda: self.query_one(first).focus())

    @on(RadioSet.Changed, "#option")
    def _option_changed(self, event: RadioSet.Changed) -> None:
        option: Option = str(event.pressed.id).removeprefix("choose-")  # type: ignore[assignment]
        if option != self.option:
            self.choose(option)

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _field_changed(self, event: Input.Changed | Checkbox.Changed) -> None:
        widget = event.input if isinstance(event, Input.Changed) else event.checkbox
        if widget.id is None or not widget.id.startswith(f"{self.option}-"):
            return
        name = widget.id.removeprefix(f"{self.option}-")
        initial = self._initial_values.get(self.option, {}).get(name)
        if isinstance(widget, Input) and widget.value != ("" if initial is None else str(initial)):
            # Checked as typed, as the prompt panel's fields are (the form as it opened is
            # checked by Provision: a first start shows no ✗ before anything is typed).
            values = self.values()
            self._mark(name, field_error(self.option, name, widget.value.strip(), values),
                       field_note(self.option, name, values))
        else:
            self._mark(name, None)
        if not self.query(".-invalid"):
            form_error = self.query_one("#form-error", Static)
            if str(form_error.render()) == FIX_FIELDS:
                form_error.update("")
        if self.option == "aws" and widget.id.removeprefix("aws-") in ESTIMATE_FIELDS:
            self._show_estimate()
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(CHECK_DELAY_S, self.action_checks)

    def _show_estimate(self, price: Any = None) -> None:
        """Option A: the hourly price, the cold start and the idle auto-stop, before launch."""
        from sdtui.deploy.aws.estimate import launch_line

        values = self.values("aws")
        idle = values.get("idle_minutes") or ""
        line = launch_line(values.get("instance_type") or "g4dn.xlarge",
                           values.get("region") or None, spot=bool(values.get("spot")),
                           idle_minutes=int(idle) if idle.isdigit() else None, price=price)
        self.query_one("#aws-estimate", Static).update(Text(f"≈ {line}", "yellow"))

    def show_errors(self, errors: dict[str, SdtuiError],
                    values: dict[str, Any] | None = None) -> None:
        for f in FIELDS[self.option]:
            self._mark(f.name, errors.get(f.name),
                       field_note(self.option, f.name, values) if values else None)

    def _mark(self, name: str, error: SdtuiError | None, note: str | None = None) -> None:
        """A field's ✗ and its error right under it, or a warning that lets the form go (none:
        both cleared)."""
        self.query_one(f"#{self.option}-{name}").set_class(error is not None, "-invalid")
        if error is not None:
            text: Text | str = Text(f"✗ {error_text(error)}", "red")
        else:
            text = Text(f"! {note}", "yellow") if note else ""
        self.query_one(f"#{self.option}-{name}-error", Static).update(text)

    @on(Button.Pressed, "#provision")
    @on(Input.Submitted)
    def action_provision(self) -> None:
        values = self.values()
        errors: dict[str, SdtuiError] = dict(field_errors(self.option, values))
        self.show_errors(errors, values)
        form_error = self.query_one("#form-error", Static)
        if errors:
            form_error.update(Text(FIX_FIELDS, "red"))
            first = next(f for f in FIELDS[self.option] if f.name in errors)
            self.query_one(f"#{self.option}-{first.name}").focus()
            return
        failed = self._failed_checks(values)
        if failed:  # the fix is in Checks, once
            form_error.update(Text(f"✗ {' and '.join(failed)}: fix what Checks shows, then "
                                   "provision.", "red"))
            return
        try:
            lines = self.app.services.batch_lines(values) if self.option == "batch" else None
            deployment = self.app.services.make_deployment(self.option, values)
        except SdtuiError as exc:
            form_error.update(Text(f"✗ {error_text(exc)}", "red"))
            return
        form_error.update("")
        if lines is not None:
            try:
                recent.remember_app(**{BATCH_RUN: {k: values[k] for k in REMEMBERED_RUN}})
            except SdtuiError as exc:
                self.notify(f"could not remember the form: {exc}", severity="warning")
            self.app.start_batch_run(deployment, lines)
        else:
            self.app.start_provision(deployment)

    def _failed_checks(self, values: dict[str, Any]) -> list[str]:
        """The ✗ checks of this very form (none while its checks are still running)."""
        if self._checked is None:
            return []
        option, form, checks = self._checked
        if option != self.option or form != values:
            return []
        return [c.name for c in checks if c.state == "fail"]

    # --- live checks -------------------------------------------------------------------------

    def action_checks(self) -> None:
        self.query_one("#checks", Static).update(Text("checking…", "dim"))
        self._run_checks(self.option, self.values())

    @work(thread=True, exclusive=True, group="checks")
    def _run_checks(self, option: Option, form: dict[str, Any]) -> None:
        values = self.app.services.effective_values(option, form)  # what Provision uses
        checks = self.app.services.live_checks(option, values)
        self.app.call_from_thread(self._show_checks, checks, option, form)
        if option == "aws" and any(c.name == "AWS identity found" and c.state == "ok"
                                   for c in checks):
            price = self.app.services.launch_price(values)  # what AWS quotes now
            if price is not None:
                self.app.call_from_thread(self._show_asked_price, form, price)

    def _show_asked_price(self, values: dict[str, Any], price: Any) -> None:
        if not self.is_attached:
            return
        if self.option == "aws" and values == self.values("aws"):  # not changed since
            self._show_estimate(price)

    def _show_checks(self, checks: list[Check], option: Option | None = None,
                     form: dict[str, Any] | None = None) -> None:
        if not self.is_attached:  # the checks' thread finished after the screen went
            return
        if option is not None and form is not None:
            self._checked = (option, form, checks)
        text = Text()
        for c in checks:
            mark, style = MARKS[c.state]
            text.append(mark, style)
            text.append(c.name, "bold")
            text.append(f"  {c.detail}\n", style if c.state == "warn" else "dim")
        with contextlib.suppress(NoMatches):  # the screen went while the checks ran
            self.query_one("#checks", Static).update(text)

    # --- existing deployments ----------------------------------------------------------------

    def refresh_deployments(self, states: bool = True) -> None:
        self._ledgers = self.app.services.list_deployments()
        self._damaged = self.app.services.damaged_deployments()
        current = recent.load().current
        table = self.query_one("#deployments", DataTable)
        table.clear()
        for ledger in self._ledgers:
            kinds = ", ".join(f"{e.kind} {e.id}" for e in ledger.resources()) or "-"
            default = current == (ledger.name, ledger.option)
            name = f"{ledger.name} (default)" if default else ledger.name
            table.add_row(name, ledger.option, "…", kinds, key=ledger.name)
        for bad in self._damaged:  # after the others, so a row's index finds its ledger
            table.add_row(bad.name, "?", "damaged", str(bad.path), key=bad.name)
        if not self._ledgers and not self._damaged:
            table.add_row("(none yet)", "", "", "")
        self.refresh_bindings()
        if states:
            self._fetch_states(list(self._ledgers))

    @work(thread=True, exclusive=True, group="deployment-states")
    def _fetch_states(self, ledgers: list[Ledger]) -> None:
        current = recent.load().current
        for ledger in ledgers:
            deployment = None
            try:
                deployment = self.app.services.resume_deployment(ledger)
                state = deployment.status().state
            except SdtuiError as exc:
                state = f"unknown ({exc.message})"
            except Exception as exc:
                state = f"unknown ({exc})"
            self.app.call_from_thread(self._set_state, ledger.name, state)
            if deployment is not None and current == (ledger.name, ledger.option):
                self.app.call_from_thread(self.app.show_state, deployment, state)

    def _set_state(self, name: str, state: str) -> None:
        table = self.query_one("#deployments", DataTable)
        if name in {row.value for row in table.rows}:
            table.update_cell(name, table.ordered_columns[2].key, state, update_width=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("resume", "teardown"):
            return bool(self._ledgers)
        return True

    def _selected(self) -> Ledger | None:
        table = self.query_one("#deployments", DataTable)
        if table.cursor_row >= len(self._ledgers) and self._damaged:
            bad = self._damaged[min(table.cursor_row - len(self._ledgers), len(self._damaged) - 1)]
            self.query_one("#form-error", Static).update(Text(f"✗ {error_text(bad.error)}", "red"))
            return None
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
            self.query_one("#form-error", Static).update(Text(f"✗ {error_text(exc)}", "red"))
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
