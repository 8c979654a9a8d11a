"""The prompt panel: the form, one key to generate, live previews, the final image, the gallery."""

from __future__ import annotations

import base64
import contextlib
import io
import random
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (
    Checkbox,
    Collapsible,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    Static,
    TextArea,
)
from textual.worker import Worker, WorkerState

from sdtui import protocol, recent
from sdtui.catalog import CatalogImage, delete_image, images_of
from sdtui.errors import BadSetting, Detached, SdtuiError, WorkerDied
from sdtui.generation import (
    GenerateSettings,
    init_image_data,
    mask_data,
    request_params,
    resolve_generate,
)
from sdtui.outputs import INDEX_NAME
from sdtui.ui import prompt_form
from sdtui.ui.fixes import error_text
from sdtui.ui.keys import TEARDOWN_BINDING
from sdtui.ui.prompt_form import (
    FIELDS,
    MAIN_GRID,
    MORE_FIELDS,
    MORE_GRID,
    MORE_HELD,
    MORE_TITLE,
    SAMPLER_ROW,
    more_title,
)
from sdtui.ui.pump import EventPump
from sdtui.ui.widgets.gallery import Gallery, describe
from sdtui.ui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from sdtui.client import RunningRequest, WorkerClient
    from sdtui.deploy.base import Deployment
    from sdtui.ui.host import SdtuiHost

FRAME_S = 1 / 15
INDEX_POLL_S = 1.0  # how soon an image another client saved shows in the gallery
WORKER_POLL_S = 2.0  # how soon the status bar shows what another client made the worker do
OTHER_CLIENT = "generating (another client)"
GONE_FIX = "ctrl+b, then Resume (it starts the worker again; finished images are kept)"
# The settings the form keeps between runs (recent.json); the init image as its path.
REMEMBERED = tuple(FIELDS)


def _coalesce_key(ev: dict[str, Any]) -> tuple[str, ...] | None:
    return (ev["type"],) if ev["type"] in ("progress", "preview") else None


class PromptScreen(Screen[None]):
    HELP_TITLE = "prompt panel"
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", priority=True,
                tooltip="Generate with this form (a new seed unless Lock seed is ticked)"),
        Binding("escape", "cancel", "Cancel",
                tooltip="Cancel the generation; the images it finished are kept"),
        Binding("ctrl+o", "randomize_seed", "New seed",
                tooltip="Pick a new random seed (and untick Lock seed)"),
        Binding("ctrl+l", "focus_gallery", "Gallery",
                tooltip="Browse this deployment's images: o open, r re-run, c copy, d delete"),
        TEARDOWN_BINDING,
        Binding("f2", "serve_api", "Serve API", show=False,
                tooltip="Start or stop serving this deployment behind A1111's web API "
                "(sdtui serve) at 127.0.0.1:7860; the status bar shows its URL and queue"),
        Binding("ctrl+b", "back", "Deployments",
                tooltip="Back to the deployment screen; the worker keeps running"),
    ]
    PALETTE = [
        ("Generate", "Generate images with this form", "generate"),
        ("Cancel generation", "Stop sampling; finished images are kept", "cancel"),
        ("Randomise seed", "Pick a new random seed", "randomize_seed"),
        ("Open the selected image", "In the system's image viewer", "open_image"),
        ("Re-run with the same seed", "Generate the selected gallery image again", "rerun"),
        ("Copy prompt back", "Put the selected image's parameters in the form", "copy_prompt"),
        ("Delete the selected image", "Its file and its index line, after asking",
         "delete_image"),
        ("Focus the gallery", "Browse this deployment's images", "focus_gallery"),
        ("Tear down this deployment", "Show what will be deleted, then delete it", "teardown"),
        ("Serve the A1111 API", "Start or stop sdtui serve for this deployment (its URL and "
         "queue in the status bar)", "serve_api"),
        ("Back to deployments", "Detach; the worker keeps running", "back"),
    ]

    app: SdtuiHost

    def __init__(self, deployment: Deployment, client: WorkerClient,
                 rerun: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.deployment = deployment
        self.rerun = rerun  # a gallery image's request, sent once the panel is open
        from sdtui.session import Session  # the Docker SDK loads after the first frame

        self.session = Session(client, self.app.services.outputs(), deployment.name,
                               who="the sdtui app")
        self.pump = EventPump(_coalesce_key)
        self.generating = False
        self.request_total = 1
        self.request_saved: list[CatalogImage] = []
        self._refused: dict[str, Any] = {}  # the fields Generate refused, as they were
        self._frames: Any = None
        self._index_seen: tuple[int, int, int] | None = None
        # The form fits the loaded model's family: FLUX.1 [dev] has Distilled CFG, not cfg...
        self.family = prompt_form.family_view(getattr(client, "ready", None))
        self.title = f"sdtui — {deployment.name} ({deployment.option})"

    # --- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="prompt-body"):
            with VerticalScroll(id="prompt-form"):
                yield from self._block("prompt", TextArea(id="prompt", soft_wrap=True,
                                                          show_line_numbers=False))
                note = Static(self.family.note(), id="family-note")
                note.display = bool(self.family.note())
                yield note
                yield from self._block("negative_prompt")
                with Grid(id="main-grid", classes="param-grid"):
                    for name in MAIN_GRID:
                        yield self._param(name)
                with Horizontal(id="sampler-row", classes="param-row"):
                    for name in SAMPLER_ROW:
                        yield self._param(name)
                with Horizontal(id="seed-row", classes="param-row"):
                    yield Vertical(*self._block("seed"), classes="param")
                    yield Checkbox("Lock seed", id="lock-seed",
                                   tooltip="Keep this seed for every Generate (otherwise each "
                                   "one picks a new seed); remembered across restarts")
                with Collapsible(title=MORE_TITLE, collapsed=True, id="more"):
                    with Horizontal(id="inputs-row"):
                        yield Vertical(*self._block("init_image"), *self._block("mask"),
                                       id="inputs-fields")
                        yield Static("", id="inputs-preview")
                    with Grid(id="more-grid", classes="param-grid"):
                        for name in MORE_GRID:
                            yield Vertical(*self._block(name), classes="param")
                    yield from self._block("grid")
            with Vertical(id="prompt-output"):
                with Vertical(id="gen-row"):
                    yield Label("", id="gen-status")
                    yield ProgressBar(id="gen-progress", show_eta=False, total=1)
                yield Vertical(self.app.image_class(id="image"), id="image-box")
                yield Static("", id="saved-path")
                yield Label("Gallery  (o open · r re-run · c copy · d delete)", classes="section")
                yield Gallery(id="gallery")
        yield StatusBar()
        yield Footer(compact=True)

    def _block(self, name: str, widget: Widget | None = None) -> list[Widget]:
        """A field's label, its widget and the line for its error, right under it; none of
        them shown when the model's family does not take the field."""
        field = FIELDS[name]
        widget = widget or self._widget(name)
        widget.tooltip = field.help
        parts: list[Widget] = [] if field.kind == "bool" else [
            Label(field.label, classes="field-label")]
        block = [*parts, widget, Static("", id=f"{name}-error", classes="field-error")]
        for part in block:
            part.display = name not in self.family.hidden
        return block

    def _param(self, name: str) -> Widget:
        """A field in a grid or row: its cell too is gone when the family leaves it out."""
        cell = Vertical(*self._block(name), classes="param")
        cell.display = name not in self.family.hidden
        return cell

    def _widget(self, name: str) -> Widget:
        field = FIELDS[name]
        if field.kind == "select":
            choices = self.family.choices(name)
            return Select(choices, id=name, allow_blank=False, value=choices[0][1])
        if field.kind == "bool":
            return Checkbox(field.label, id=name)
        kind = {"int": "integer", "float": "number"}.get(field.kind, "text")
        return Input(id=name, type=kind,  # type: ignore[arg-type]
                     placeholder=self.family.placeholder(name))

    def field_help(self) -> list[tuple[str, str]]:
        lock = ("Lock seed", "Keep the seed for every Generate; otherwise each picks a new one.")
        return [(f.label, f.help) for f in FIELDS.values()] + [lock]

    def family_help(self) -> list[tuple[str, str]]:
        """What each model family takes and where it runs; this model's first."""
        loaded = self.family.note() or (f"{self.family.label}: every field applies"
                                        if self.family.label else "")
        return [("This model", loaded)] * bool(loaded) + list(prompt_form.FAMILY_HELP)

    def on_mount(self) -> None:
        self.app.worker_state = "ready"
        self.query_one("#gen-progress", ProgressBar).display = False
        self._fill(self._remembered())
        given_seed = self.app.services.given.generate.get("seed") is not None
        lock = given_seed or bool(recent.load().app.get("lock_seed"))
        self.query_one("#lock-seed", Checkbox).value = lock  # --seed means this seed
        gallery = self.query_one("#gallery", Gallery)
        gallery.load(images_of(self.session.out_dir, self.deployment.name))
        self._index_seen = self._index_stamp()
        self._frames = self.set_interval(FRAME_S, self._frame)
        self.set_interval(INDEX_POLL_S, self._follow_index)
        self.set_interval(WORKER_POLL_S, self._poll_worker)
        self.query_one("#prompt", TextArea).focus()
        if self._show_more_held():  # what the last session left set is in sight
            self.query_one("#more", Collapsible).collapsed = False
        self._recover()
        if self.rerun is not None:
            self.action_generate(self.rerun)

    def _show_more_held(self) -> bool:
        """More's header says what it holds; True when it holds something."""
        title = more_title({name: self._raw(name) for name, _ in MORE_HELD})
        self.query_one("#more", Collapsible).title = title
        return title != MORE_TITLE

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _more_changed(self, event: Input.Changed | Select.Changed | Checkbox.Changed) -> None:
        if event.control.id in dict(MORE_HELD):
            self._show_more_held()
        if event.control.id in ("init_image", "mask"):
            self._preview_inputs(self._raw("init_image"), self._raw("mask"))

    @work(thread=True, exclusive=True, group="inputs-preview")
    def _preview_inputs(self, init_image: str, mask: str) -> None:
        """The init image and the mask as small pictures beside their fields (files are read
        in this thread: a large one never holds up typing)."""
        from sdtui.ui.thumbnail import half_blocks

        shown = Text()
        for label, value in (("init image", init_image), ("mask", mask)):
            picture = half_blocks(Path(value.strip()).expanduser()) if value.strip() else None
            if picture is not None:
                shown.append(f"{label}\n", "dim")
                shown.append_text(picture)
        self.app.call_from_thread(self._show_inputs_preview, shown)

    def _show_inputs_preview(self, shown: Text) -> None:
        if not self.is_attached:
            return
        preview = self.query_one("#inputs-preview", Static)
        preview.update(shown)
        preview.display = bool(shown.plain)

    # --- the form ------------------------------------------------------------------------------

    def _remembered(self) -> dict[str, Any]:
        """The form's values: the flags the app was started with, then what the form last had,
        then the config file, then the defaults."""
        settings = resolve_generate(dict(self.app.services.given.generate),
                                    remembered=recent.load().generate,
                                    config=self.app.services.load_config())
        return asdict(settings)

    def _fill(self, values: dict[str, Any]) -> None:
        for name in FIELDS:
            if name not in values:
                continue
            value = values[name]
            widget = self.query_one(f"#{name}")
            if isinstance(widget, TextArea):
                widget.text = str(value or "")
            elif isinstance(widget, Checkbox):
                widget.value = bool(value)
            elif isinstance(widget, Select):
                shown = "off" if name == "upscale" and not value else str(value)
                if shown in {v for _, v in self.family.choices(name)}:
                    widget.value = shown
            elif isinstance(widget, Input):
                widget.value = prompt_form.shown(value)

    def _raw(self, name: str) -> Any:
        widget = self.query_one(f"#{name}")
        if isinstance(widget, TextArea):
            return widget.text.strip()
        return widget.value  # type: ignore[attr-defined]

    def _show_error(self, name: str, error: SdtuiError | None) -> None:
        self.query_one(f"#{name}").set_class(error is not None, "-invalid")
        self.query_one(f"#{name}-error", Static).update(
            Text(f"✗ {error.message if isinstance(error, BadSetting) else error_text(error)}",
                 "red") if error else "")

    def _check_field(self, name: str) -> BadSetting | None:
        try:
            form = {other: prompt_form.parse(other, self._raw(other))
                    for other in prompt_form.CHECKED_WITH.get(name, ())}
            prompt_form.check(name, prompt_form.parse(name, self._raw(name)), form)
        except BadSetting as exc:
            return exc
        return None

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        """Checked as you type: the error sits under the field, and the field is marked. An
        error from Generate stays until the field changes."""
        name = event.input.id or ""
        if name in FIELDS and self._refused.get(name) != event.value:
            self._refused.pop(name, None)
            self._show_error(name, self._check_field(name))

    @on(Select.Changed)
    def _choice_changed(self, event: Select.Changed) -> None:
        """A choice that another field's check reads (the sampler) checks that field again."""
        name = event.select.id or ""
        if name == "scheduler":
            self._mark_schedules(str(event.value))
        for checked in (name, *(f for f, others in prompt_form.CHECKED_WITH.items()
                                if name in others)):
            if checked in FIELDS:
                self._refused.pop(checked, None)
                self._show_error(checked, self._check_field(checked))

    def _mark_schedules(self, sampler: str) -> None:
        """The schedule list marks the schedules this sampler lacks."""
        select = self.query_one("#schedule", Select)
        value = select.value
        with select.prevent(Select.Changed):
            select.set_options(prompt_form.schedule_choices(sampler, self.family.flow))
            select.value = value

    @on(TextArea.Changed, "#prompt")
    def _prompt_typed(self) -> None:
        if self._refused.get("prompt") != self._raw("prompt"):
            self._refused.pop("prompt", None)
            self._show_error("prompt", None)

    def read_request(self) -> tuple[GenerateSettings, dict[str, Any]] | None:
        """The form as checked settings and request parameters; None after marking every bad
        field (its error under it) and moving the focus to the first one. A refusal changes
        nothing else (no new seed)."""
        errors: dict[str, SdtuiError] = {}
        given: dict[str, Any] = {}
        parsed: dict[str, Any] = {}
        for name in FIELDS:
            try:
                parsed[name] = prompt_form.parse(name, self._raw(name))
            except BadSetting as exc:
                errors[name] = exc
        for name, value in parsed.items():
            try:
                prompt_form.check(name, value, parsed)
            except BadSetting as exc:
                errors[name] = exc
                continue
            if value is not None:
                given[name] = value
        for name in self.family.hidden:  # kept for the next model, never sent to this one
            errors.pop(name, None)
        result = None
        if not errors:
            settings = resolve_generate(given, config=self.app.services.load_config())
            images: dict[str, str | None] = {}
            for name, read in (("init_image", init_image_data), ("mask", mask_data)):
                try:
                    images[name] = read(settings)
                except SdtuiError as exc:  # the file could not be read as an image
                    errors[name] = exc
            if not errors:
                try:
                    result = settings, self.family.fit(request_params(settings, **images))
                except BadSetting as exc:
                    errors[exc.setting if exc.setting in FIELDS else "prompt"] = exc
        for name in FIELDS:
            self._show_error(name, errors.get(name))
        self._refused = {name: self._raw(name) for name in errors}
        if errors:
            first = next(name for name in FIELDS if name in errors)
            if set(errors) & set(MORE_FIELDS):  # open More to show its errors
                self.query_one("#more", Collapsible).collapsed = False
            self.query_one(f"#{first}").focus()
            return None
        return result

    def _remember(self, settings: GenerateSettings) -> None:
        values = {k: v for k, v in asdict(settings).items() if k in REMEMBERED}
        try:
            recent.remember_generate(values)
            recent.remember_app(lock_seed=self.query_one("#lock-seed", Checkbox).value)
        except SdtuiError as exc:
            self.notify(f"could not remember the form: {exc}", severity="warning")

    @on(Checkbox.Changed, "#lock-seed")
    def _lock_changed(self, event: Checkbox.Changed) -> None:
        try:
            recent.remember_app(lock_seed=event.value)
        except SdtuiError as exc:
            self.notify(f"could not remember Lock seed: {exc}", severity="warning")

    # --- generation ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the keys that act now."""
        if action == "cancel":
            return self.generating
        if action in ("generate", "teardown", "back", "rerun", "delete_image"):
            return not self.generating and (action not in ("rerun", "delete_image")
                                            or self._has_images())
        if action in ("open_image", "copy_prompt", "focus_gallery"):
            return self._has_images()
        return True

    def _has_images(self) -> bool:
        return bool(self.query("#gallery")) and bool(self.query_one("#gallery", Gallery).images)

    def _set_generating(self, generating: bool) -> None:
        self.generating = generating
        # A bar only while sampling: idle, cancelled or failed, the status line says so alone.
        self.query_one("#gen-progress", ProgressBar).display = generating
        self.app.worker_state = "generating" if generating else "ready"
        self.refresh_bindings()

    def action_generate(self, params: dict[str, Any] | None = None) -> None:
        if self.generating:
            return
        if params is None:
            read = self.read_request()
            if read is None:
                return
            settings, params = read
            if not self.query_one("#lock-seed", Checkbox).value or settings.seed is None:
                settings = replace(settings, seed=random.randint(0, protocol.MAX_SEED))
                params["seed"] = settings.seed
            self._fill({"seed": settings.seed})
            self._remember(settings)
            params.pop("preview_every", None)  # the protocol's default: previews on
        self.request_total = params["count"]
        self.request_saved = []
        self._set_generating(True)
        self.query_one("#gen-status", Label).update("starting…")
        self.query_one("#saved-path", Static).update(Text("generating…", "dim"))
        self.query_one("#gen-progress", ProgressBar).update(total=params["steps"], progress=0)
        self.run_worker(lambda: self._generate_batch(params), thread=True,
                        exit_on_error=False, group="generate", name="generate")

    def _generate_batch(self, params: dict[str, Any]) -> tuple[int, bool, Path | None]:
        """In a worker thread: the request, then the batch's grid when asked for one."""
        with contextlib.suppress(SdtuiError):  # a worker that cannot answer: generate says so
            info = self.session.client.info(timeout=5)
            if info["busy"] is not None:  # the worker runs requests in order
                self.pump.put({"type": "waiting", "queued": info["queued"]})
        saved, cancelled = self.session.generate(params, self.pump.put)
        grid = None
        if params.get("grid") and len(saved) > 1:
            from sdtui.grid import save_grid

            grid = save_grid([image.path for image in saved])
        return len(saved), cancelled, grid

    def action_cancel(self) -> None:
        if self.generating and self.session.cancel():
            self.query_one("#gen-status", Label).update("cancelling…")

    @work(thread=True, exit_on_error=False, group="recover")
    def _recover(self) -> None:
        recovery = self.session.take_over()
        for image in recovery.saved:
            self.pump.put({"type": "recovered", "image": image})
        if recovery.adopted is not None:
            self.app.call_from_thread(self._adopt, recovery.adopted)

    def _adopt(self, adopted: RunningRequest) -> None:
        """The request a client that quit left running: shown in the form, and followed like
        our own (progress, previews, images saved to the gallery)."""
        params = adopted.params
        self._fill(params)
        self._set_generating(True)
        self.request_total = params.get("count", 1)
        self.query_one("#gen-status", Label).update("adopted: left running by a client that quit")
        self.query_one("#gen-progress", ProgressBar).update(total=params.get("steps"), progress=0)
        self.notify(f"Following {params.get('prompt', 'a request')!r}, left running by a client "
                    "that quit; its images are saved here.")
        self.run_worker(lambda: self._follow_adopted(adopted), thread=True, exit_on_error=False,
                        group="generate", name="adopted")

    def _follow_adopted(self, adopted: RunningRequest) -> tuple[int, bool, None]:
        """In a worker thread: as _generate_batch, for the adopted request (no grid)."""
        saved, cancelled = self.session.follow(adopted, self.pump.put)
        return len(saved), cancelled, None

    def _frame(self) -> None:
        for ev in self.pump.drain():
            self.apply(ev)

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        if kind == "progress":
            self.query_one("#gen-progress", ProgressBar).update(total=ev["total"],
                                                                progress=ev["step"])
            self.query_one("#gen-status", Label).update(
                f"image {ev['index'] + 1}/{self.request_total} · step {ev['step']}/{ev['total']}")
        elif kind == "waiting":
            ahead = ev["queued"] + 1
            self.query_one("#gen-status", Label).update(Text(
                f"waiting: the worker is busy with another client's request ({ahead} ahead of "
                "this one); it starts when that finishes", "yellow"))
        elif kind == "preview":
            from PIL import Image as PILImage  # loaded with textual-image, after the first frame

            self.show_image(PILImage.open(io.BytesIO(base64.b64decode(ev["png"]))))
        elif kind == "image":
            image = CatalogImage(Path(ev["path"]), ev["params"], _now())
            self.request_saved.append(image)
            self._saved(image)
        elif kind == "recovered":
            saved = ev["image"]
            self._saved(CatalogImage(saved.path, saved.params, _now()))
            self.notify(f"recovered an image finished while detached: {saved.path}")

    def _saved(self, image: CatalogImage) -> None:
        self.query_one("#gallery", Gallery).add_image(image)  # selecting it shows it
        self.show_selected(image)
        self.refresh_bindings()

    def show_selected(self, image: CatalogImage | None) -> None:
        """An image and every parameter it was made with; None clears both."""
        self.show_image(image.path if image else None)
        self.query_one("#saved-path", Static).update(describe(image) if image else "")

    def show_image(self, image: Any) -> None:
        self.query_one("#image").image = image  # type: ignore[attr-defined]

    @on(DataTable.RowHighlighted, "#gallery")
    def _row_highlighted(self) -> None:
        """A row the user moves to (not one a new image selects: that one is shown already)."""
        gallery = self.query_one("#gallery", Gallery)
        if gallery.has_focus and not self.generating:
            self.show_selected(gallery.selected)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "generate" or event.state in (WorkerState.PENDING,
                                                               WorkerState.RUNNING):
            return
        self._frame()
        self._set_generating(False)
        status = self.query_one("#gen-status", Label)
        if event.state == WorkerState.SUCCESS:
            count, cancelled, grid = event.worker.result
            status.update(f"{'cancelled: ' if cancelled else ''}{count} image(s) saved")
            if cancelled:  # no partial preview stays on screen
                self.show_selected(self.request_saved[-1] if self.request_saved else None)
                if not self.request_saved:
                    self.query_one("#saved-path", Static).update(
                        Text("cancelled before an image was finished: nothing saved", "dim"))
            if grid is not None:
                self.show_image(grid)
                self.query_one("#saved-path", Static).update(f"grid saved {grid}")
                self.notify(str(grid), title="Grid saved")
        else:
            self.app.worker_state = "error"
            self.show_selected(self.request_saved[-1] if self.request_saved else None)
            status.update(Text(f"✗ {error_text(event.worker.error or Exception())}", "red"))

    # --- the worker's real state, while this client is idle --------------------------------------

    def _poll_worker(self) -> None:
        if not self.generating:
            self._ask_worker()

    @work(thread=True, exclusive=True, group="worker-state", exit_on_error=False)
    def _ask_worker(self) -> None:
        try:
            info = self.session.client.info(timeout=10)
        except Detached:
            return  # we let go of it ourselves
        except WorkerDied as exc:  # torn down or stopped by another client
            self.app.call_from_thread(self._worker_seen, "gone", exc)
            return
        except SdtuiError:
            return  # a slow answer: asked again at the next poll
        self.app.call_from_thread(self._worker_seen, OTHER_CLIENT if info["busy"] else "ready")

    def _worker_seen(self, state: str, error: SdtuiError | None = None) -> None:
        if self.generating or self.app.worker_state == state:
            return
        self.app.worker_state = state
        if error is not None:
            fix = "" if error.fix else f" — {GONE_FIX}"
            self.query_one("#gen-status", Label).update(
                Text(f"✗ {error_text(error)}{fix}", "red"))

    # --- gallery -------------------------------------------------------------------------------

    def _index_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = (self.session.out_dir / INDEX_NAME).stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _follow_index(self) -> None:
        """Images another client (a --no-ui run, another app) saved for this deployment."""
        stamp = self._index_stamp()
        if stamp != self._index_seen:
            self._index_seen = stamp
            self._read_index()

    @work(thread=True, exclusive=True, group="index", exit_on_error=False)
    def _read_index(self) -> None:
        found = images_of(self.session.out_dir, self.deployment.name)
        self.app.call_from_thread(self._add_found, found)

    def _add_found(self, found: list[CatalogImage]) -> None:
        gallery = self.query_one("#gallery", Gallery)
        for image in found:
            gallery.add_image(image, select=not self.generating and not gallery.has_focus)
        self.refresh_bindings()

    def _selected(self) -> CatalogImage | None:
        image = self.query_one("#gallery", Gallery).selected
        if image is None:
            self.notify("No images yet: ctrl+g generates.", severity="warning")
        return image

    def action_focus_gallery(self) -> None:
        # At once, not at the next idle as Widget.focus does: keys typed right after ctrl+l
        # (up, o, r, d) are already queued and must reach the gallery, not the prompt.
        self.set_focus(self.query_one("#gallery", Gallery))

    def action_open_image(self) -> None:
        from sdtui.ui.viewer import open_and_tell

        image = self._selected()
        if image is not None:
            open_and_tell(self, image.path)

    def action_rerun(self) -> None:
        image = self._selected()
        if image is None or self.generating:
            return
        # The recorded request, every option included (the init image's stored copy too),
        # not the form; and the model it was made with when that was fetched by name.
        from sdtui.fetch.plan import fetched_source
        from sdtui.metadata.reader import recorded_source, resolve_inputs

        try:
            recorded = resolve_inputs(image.params, image.path.parent, image.path)
            settings = resolve_generate({}, recorded=recorded,
                                        config=self.app.services.load_config())
            params = request_params(settings)
            source = recorded_source(image.path)
        except SdtuiError as exc:
            self.notify(error_text(exc), severity="error", title="Re-run")
            return
        params.pop("preview_every", None)  # the form stays as it is: c copies into it
        ledger = getattr(self.deployment, "ledger", None)
        running = fetched_source(ledger.params) if ledger is not None else None
        if source is not None and source != running:
            self._rerun_with(source, running, params)
        else:
            self.action_generate(params)

    def _rerun_with(self, source: str, running: str | None, params: dict[str, Any]) -> None:
        """An image made with another fetched model re-runs with that very model (its pinned
        source, as `--from-png` does): the deployment is made again with it, after asking."""
        from sdtui.ui.screens.confirm import ConfirmModal

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                deployment = self.app.services.with_model(self.deployment, source)
            except SdtuiError as exc:
                self.notify(error_text(exc), severity="error", title="Re-run")
                return
            self.detach()
            self.app.start_provision(deployment, rerun=params)

        now = running or "another model"
        self.app.push_screen(ConfirmModal(
            "Re-run with the model this image was made with?",
            f"It was made with {source}; {self.deployment.name} runs {now}. Re-running "
            f"provisions {self.deployment.name} again with {source} (fetched unless it is "
            "already here), then generates the image's request.", "Provision and re-run"),
            answered)

    def action_copy_prompt(self) -> None:
        image = self._selected()
        if image is None:
            return
        self._fill({k: v for k, v in image.params.items() if k not in ("init_image", "mask")})
        self.query_one("#prompt", TextArea).focus()
        self.app.copy_to_clipboard(str(image.params.get("prompt", "")))
        note = " The init image and mask are not: r re-runs with them." if image.params.get(
            "init_image") else ""
        self.notify(f"Copied the prompt and parameters into the form.{note}")

    def action_delete_image(self) -> None:
        from sdtui.ui.screens.confirm import ConfirmModal

        image = self._selected()
        if image is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                delete_image(image.path)
            except SdtuiError as exc:
                self.notify(error_text(exc), severity="error", title="Delete")
                return
            gallery = self.query_one("#gallery", Gallery)
            gallery.remove_image(image)
            self.show_selected(gallery.selected)
            self.refresh_bindings()

        self.app.push_screen(ConfirmModal(
            f"Delete {image.path.name}?",
            f"The file and its line in index.jsonl are deleted from {image.path.parent}.",
            "Delete"), answered)

    def action_randomize_seed(self) -> None:
        self.query_one("#lock-seed", Checkbox).value = False
        self.query_one("#seed", Input).value = str(random.randint(0, protocol.MAX_SEED))

    # --- leaving ---------------------------------------------------------------------------------

    def action_teardown(self) -> None:
        if not self.generating:
            self.app.confirm_teardown(self.deployment)

    def action_serve_api(self) -> None:
        self.app.toggle_serving(self.deployment)

    def action_back(self) -> None:
        if self.generating:
            return
        self.detach()
        self.app.back_to_deployments(detached=True)

    def detach(self) -> None:
        """Let go of the worker; a request still running goes on there and its images are
        saved the next time a client attaches."""
        if self._frames is not None:
            self._frames.stop()
        self.session.close()  # never waits; lets the next client take over

    def on_unmount(self) -> None:
        # Quitting never waits for a generation: the worker thread gets Detached at once, and
        # the request goes on in the worker, adopted by the next session.
        self.session.close()


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")
