"""The prompt panel: the form, one key to generate, live previews, the final image, the gallery."""

from __future__ import annotations

import base64
import io
import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Checkbox,
    Collapsible,
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

from sdtui import protocol, recent, samplers
from sdtui.errors import BadInput, SdtuiError
from sdtui.generation import resolve_generate
from sdtui.ui.pump import EventPump
from sdtui.ui.widgets.gallery import Gallery
from sdtui.ui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from sdtui.client import WorkerClient
    from sdtui.deploy.base import Deployment
    from sdtui.session import SavedImage
    from sdtui.ui.app import SdtuiApp

FRAME_S = 1 / 15
NUMBER_FIELDS = {"steps": int, "cfg": float, "width": int, "height": int, "count": int}
# The guide's other switches (-I/-f, -G, -U, -v/-V, -g), in the collapsed "More" section.
MORE_NUMBER_FIELDS = {"strength": float, "gfpgan": float, "upscale_strength": float,
                      "variation_amount": float}
MORE_FIELDS = ("init_image", "mask", *MORE_NUMBER_FIELDS, "fit", "upscale", "variation_seed",
               "grid")
FORM_FIELDS = ("prompt", "negative_prompt", *NUMBER_FIELDS, "seed", "scheduler", "schedule",
               *MORE_FIELDS)
# A1111's Schedule type labels; "automatic" is what A1111 picks for the sampler.
SCHEDULE_CHOICES = (*((samplers.SCHEDULE_A1111[s], s) for s in protocol.SCHEDULES),
                    ("Automatic", samplers.AUTOMATIC))
UPSCALE_CHOICES = (("off", "off"), ("×2", "2"), ("×4", "4"))
# What the request carries but the form does not show as such (the init image is sent as
# base64: the form and the ledger keep its path instead).
NOT_REMEMBERED = ("init_image", "mask", "type", "id", "preview_every")


def _coalesce_key(ev: dict[str, Any]) -> tuple[str, ...] | None:
    return (ev["type"],) if ev["type"] in ("progress", "preview") else None


def field_of(message: str) -> str:
    """The form field a protocol error names ('steps must be from 1 to 150, got 0')."""
    word = message.removeprefix("generate: ").split(" ", 1)[0]
    return word if word in FORM_FIELDS else "prompt"


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _image_file(path: Path, field: str = "init_image") -> str:
    """The init image (or mask) file as base64, checked to be a PNG or JPEG (BadInput
    otherwise)."""
    from sdtui.inputs import read_init_image

    what = field.replace("_", " ")
    if not path.is_file():
        raise BadInput(f"{what} {path} does not exist", fix="check the path")
    data = read_init_image(path)
    try:
        protocol.request("generate", id="check", prompt="-", init_image=data)
    except protocol.ProtocolError as exc:
        problem = str(exc).removeprefix("generate: ").replace("init_image", path.name, 1)
        raise BadInput(problem, fix="choose a PNG or JPEG file") from exc
    return data


class PromptScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", priority=True),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+o", "randomize_seed", "New seed"),
        Binding("ctrl+l", "focus_gallery", "Gallery"),
        Binding("ctrl+t", "teardown", "Tear down"),
        Binding("ctrl+b", "back", "Deployments"),
    ]
    PALETTE = [
        ("Generate", "Generate images with this form", "generate"),
        ("Cancel generation", "Stop sampling; finished images are kept", "cancel"),
        ("Randomise seed", "Pick a new random seed", "randomize_seed"),
        ("Re-run with the same seed", "Generate the selected gallery image again", "rerun"),
        ("Copy prompt back", "Put the selected image's parameters in the form", "copy_prompt"),
        ("Show saved path", "Where the selected image was saved", "show_path"),
        ("Focus the gallery", "Browse this session's images", "focus_gallery"),
        ("Tear down this deployment", "Show what will be deleted, then delete it", "teardown"),
        ("Back to deployments", "Detach; the worker keeps running", "back"),
    ]

    app: SdtuiApp

    def __init__(self, deployment: Deployment, client: WorkerClient) -> None:
        super().__init__()
        self.deployment = deployment
        from sdtui.session import Session  # the Docker SDK loads after the first frame

        self.session = Session(client, self.app.services.outputs())
        self.pump = EventPump(_coalesce_key)
        self.generating = False
        self.request_total = 1
        self.title = f"sdtui — {deployment.name} ({deployment.option})"

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="prompt-body"):
            with VerticalScroll(id="prompt-form"):
                yield Label("Prompt", classes="field-label")
                yield TextArea(id="prompt", soft_wrap=True, show_line_numbers=False)
                yield Static("", id="prompt-error", classes="field-error")
                yield Label("Negative prompt", classes="field-label")
                yield Input(id="negative_prompt", placeholder="what to avoid")
                yield Static("", id="negative_prompt-error", classes="field-error")
                with Horizontal(classes="param-row"):
                    for name in ("steps", "cfg", "count"):
                        with Vertical(classes="param"):
                            yield Label(name, classes="field-label")
                            yield Input(id=name)
                with Horizontal(classes="param-row"):
                    for name in ("width", "height"):
                        with Vertical(classes="param"):
                            yield Label(name, classes="field-label")
                            yield Input(id=name, placeholder="model's")
                    with Vertical(classes="param"):
                        yield Label("seed", classes="field-label")
                        yield Input(id="seed", placeholder="random")
                yield Checkbox("Lock seed (otherwise a new one each time)", id="lock-seed")
                with Horizontal(classes="param-row"):
                    with Vertical(classes="param"):
                        yield Label("Scheduler", classes="field-label")
                        yield Select([(s, s) for s in protocol.SCHEDULERS], id="scheduler",
                                     allow_blank=False, value=protocol.DEFAULT_SCHEDULER)
                    with Vertical(classes="param"):
                        yield Label("Schedule", classes="field-label")
                        yield Select(SCHEDULE_CHOICES, id="schedule", allow_blank=False,
                                     value=protocol.DEFAULT_SCHEDULE)
                for name in ("steps", "cfg", "count", "width", "height", "seed", "scheduler",
                             "schedule"):
                    yield Static("", id=f"{name}-error", classes="field-error")
                with Collapsible(title="More: init image, mask, faces, upscale, variations, "
                                 "grid",
                                 collapsed=True, id="more"):
                    yield from self._compose_more()
            with Vertical(id="prompt-output"):
                with Horizontal(id="gen-row"):
                    yield Label("", id="gen-status")
                    yield ProgressBar(id="gen-progress", show_eta=False, total=1)
                yield Vertical(self.app.image_class(id="image"), id="image-box")
                yield Static("", id="saved-path")
                yield Label("Gallery  (r re-run · c copy prompt · o show path)", classes="section")
                yield Gallery(id="gallery")
        yield StatusBar()
        yield Footer()

    def _compose_more(self) -> ComposeResult:
        yield Label("Init image (PNG or JPEG; img2img)", classes="field-label")
        yield Input(id="init_image", placeholder="none: text to image")
        yield Static("", id="init_image-error", classes="field-error")
        yield Label("Mask (inpainting: white or transparent is repainted)", classes="field-label")
        yield Input(id="mask", placeholder="none: the whole image")
        yield Static("", id="mask-error", classes="field-error")
        with Horizontal(classes="param-row"):
            with Vertical(classes="param"):
                yield Label("strength", classes="field-label")
                yield Input(id="strength")
            with Vertical(classes="param"):
                yield Label("fit", classes="field-label")
                yield Select([("resize", "resize"), ("crop", "crop")], id="fit",
                             allow_blank=False, value="resize")
        with Horizontal(classes="param-row"):
            with Vertical(classes="param"):
                yield Label("face restore (GFPGAN)", classes="field-label")
                yield Input(id="gfpgan", placeholder="0 = off")
            with Vertical(classes="param"):
                yield Label("upscale", classes="field-label")
                yield Select(UPSCALE_CHOICES, id="upscale", allow_blank=False, value="off")
            with Vertical(classes="param"):
                yield Label("upscale strength", classes="field-label")
                yield Input(id="upscale_strength")
        with Horizontal(classes="param-row"):
            with Vertical(classes="param"):
                yield Label("variation amount", classes="field-label")
                yield Input(id="variation_amount", placeholder="0 = off")
            with Vertical(classes="param"):
                yield Label("variation seed", classes="field-label")
                yield Input(id="variation_seed", placeholder="random")
        yield Checkbox("Grid of the batch (saved beside the images)", id="grid")
        for name in ("strength", "fit", "gfpgan", "upscale", "upscale_strength",
                     "variation_amount", "variation_seed", "grid"):
            yield Static("", id=f"{name}-error", classes="field-error")

    def on_mount(self) -> None:
        self.app.worker_state = "ready"
        self._fill(self._remembered())
        given_seed = self.app.services.given.generate.get("seed") is not None
        lock = given_seed or bool(recent.load().app.get("lock_seed"))
        self.query_one("#lock-seed", Checkbox).value = lock  # --seed means this seed
        self.set_interval(FRAME_S, self._frame)
        self.query_one("#prompt", TextArea).focus()
        self._recover()

    # --- form ----------------------------------------------------------------------------------

    def _remembered(self) -> dict[str, Any]:
        """The form's values: the flags the app was started with, then what the form last had,
        then the config file, then the defaults."""
        remembered = recent.load().generate
        settings = resolve_generate(dict(self.app.services.given.generate),
                                    remembered=remembered,
                                    config=self.app.services.load_config())
        values = asdict(settings)
        values["init_image_path"] = str(settings.init_image or "")
        values["mask_path"] = str(settings.mask or "")
        return values

    def _fill(self, values: dict[str, Any]) -> None:
        if "prompt" in values:
            self.query_one("#prompt", TextArea).text = str(values["prompt"])
        for name in ("negative_prompt", *NUMBER_FIELDS, "seed"):
            if name in values:
                self.query_one(f"#{name}", Input).value = _shown(values[name])
        if values.get("scheduler") in protocol.SCHEDULERS:
            self.query_one("#scheduler", Select).value = values["scheduler"]
        if values.get("schedule") in protocol.SCHEDULES:
            self.query_one("#schedule", Select).value = values["schedule"]
        for name in (*MORE_NUMBER_FIELDS, "variation_seed"):
            if name in values:
                self.query_one(f"#{name}", Input).value = _shown(values[name])
        for name in ("init_image", "mask"):
            if f"{name}_path" in values:
                self.query_one(f"#{name}", Input).value = values[f"{name}_path"] or ""
        if values.get("fit") in ("resize", "crop"):
            self.query_one("#fit", Select).value = values["fit"]
        if "upscale" in values:
            self.query_one("#upscale", Select).value = str(values["upscale"] or "off")
        if "grid" in values:
            self.query_one("#grid", Checkbox).value = bool(values["grid"])

    def _clear_errors(self) -> None:
        for error in self.query(".field-error"):
            error.update("")  # type: ignore[attr-defined]

    def _error(self, field: str, message: str) -> None:
        self.query_one(f"#{field}-error", Static).update(Text(f"✗ {message}", "red"))

    def read_params(self) -> dict[str, Any] | None:
        """The form as checked request parameters; None after showing the errors inline."""
        self._clear_errors()
        params: dict[str, Any] = {
            "prompt": self.query_one("#prompt", TextArea).text.strip(),
            "negative_prompt": self.query_one("#negative_prompt", Input).value,
            "scheduler": self.query_one("#scheduler", Select).value,
            "schedule": self.query_one("#schedule", Select).value,
        }
        ok = True
        for name, kind in NUMBER_FIELDS.items():
            raw = self.query_one(f"#{name}", Input).value.strip()
            if not raw and protocol.GENERATE_FIELDS[name].nullable:
                params[name] = None  # the size: the model's own (1024 for SDXL)
                continue
            try:
                params[name] = kind(raw)
            except ValueError:
                self._error(name, f"{name} must be a {'whole ' if kind is int else ''}number")
                ok = False
        seed_input = self.query_one("#seed", Input)
        if not self.query_one("#lock-seed", Checkbox).value or not seed_input.value.strip():
            seed_input.value = str(random.randint(0, protocol.MAX_SEED))
        try:
            params["seed"] = int(seed_input.value)
        except ValueError:
            self._error("seed", "seed must be a whole number (or untick Lock seed)")
            ok = False
        ok = self._read_more(params) and ok
        if not ok:
            return None
        try:
            checked = protocol.request("generate", id="check", **params)
        except protocol.ProtocolError as exc:
            message = str(exc).removeprefix("generate: ")
            self._error(field_of(message), message)
            return None
        return {k: v for k, v in checked.items() if k not in ("type", "id", "preview_every")}

    def _read_more(self, params: dict[str, Any]) -> bool:
        """The "More" fields into params; False after showing an error next to a field."""
        ok = True
        for name in MORE_NUMBER_FIELDS:
            raw = self.query_one(f"#{name}", Input).value.strip()
            try:
                params[name] = float(raw) if raw else protocol.GENERATE_FIELDS[name].default
            except ValueError:
                self._error(name, f"{name} must be a number from 0 to 1")
                ok = False
        raw = self.query_one("#variation_seed", Input).value.strip()
        try:
            params["variation_seed"] = int(raw) if raw else None
        except ValueError:
            self._error("variation_seed", "variation seed must be a whole number (or empty)")
            ok = False
        params["fit"] = self.query_one("#fit", Select).value
        upscale = self.query_one("#upscale", Select).value
        params["upscale"] = None if upscale == "off" else int(str(upscale))
        params["grid"] = self.query_one("#grid", Checkbox).value
        for name in ("init_image", "mask"):
            path = self.query_one(f"#{name}", Input).value.strip()
            params[name] = None
            if path:
                try:
                    params[name] = _image_file(Path(path).expanduser(), name)
                except SdtuiError as exc:
                    self._error(name, str(exc))
                    ok = False
        if not ok:
            self.query_one("#more", Collapsible).collapsed = False
        return ok

    def _remember(self, params: dict[str, Any]) -> None:
        remembered = {k: v for k, v in params.items() if k not in NOT_REMEMBERED}
        for name in ("init_image", "mask"):
            remembered[name] = self.query_one(f"#{name}", Input).value.strip() or None
        try:
            recent.remember_generate(remembered)
            recent.remember_app(lock_seed=self.query_one("#lock-seed", Checkbox).value)
        except SdtuiError as exc:
            self.notify(f"could not remember the form: {exc}", severity="warning")

    # --- generation ----------------------------------------------------------------------------

    def action_generate(self, params: dict[str, Any] | None = None) -> None:
        if self.generating:
            self.notify("Already generating: Escape cancels.", severity="warning")
            return
        params = params or self.read_params()
        if params is None:
            return
        self._remember(params)
        self.generating = True
        self.request_total = params["count"]
        self.app.worker_state = "generating"
        self.query_one("#gen-status", Label).update("starting…")
        self.query_one("#gen-progress", ProgressBar).update(total=params["steps"], progress=0)
        self.run_worker(lambda: self._generate_batch(params), thread=True,
                        exit_on_error=False, group="generate", name="generate")

    def _generate_batch(self, params: dict[str, Any]) -> tuple[list[SavedImage], bool, Path | None]:
        """In a worker thread: the request, then the batch's grid when asked for one."""
        saved, cancelled = self.session.generate(params, self.pump.put)
        grid = None
        if params.get("grid") and len(saved) > 1:
            from sdtui.grid import save_grid

            grid = save_grid([image.path for image in saved])
        return saved, cancelled, grid

    def action_cancel(self) -> None:
        if self.generating and self.session.cancel():
            self.query_one("#gen-status", Label).update("cancelling…")

    @work(thread=True, exit_on_error=False, group="recover")
    def _recover(self) -> None:
        for image in self.session.recover():
            self.pump.put({"type": "recovered", "image": image})

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
        elif kind == "preview":
            from PIL import Image as PILImage  # loaded with textual-image, after the first frame

            self.show_image(PILImage.open(io.BytesIO(base64.b64decode(ev["png"]))))
        elif kind == "image":
            from sdtui.session import SavedImage

            self._saved(SavedImage(Path(ev["path"]), ev["id"], ev["index"], ev["seed"],
                                   ev["params"]))
        elif kind == "recovered":
            self._saved(ev["image"])
            self.notify(f"recovered an image finished while detached: {ev['image'].path}")

    def _saved(self, image: SavedImage) -> None:
        self.show_image(image.path)
        self.query_one("#gallery", Gallery).add_image(image)
        self.query_one("#saved-path", Static).update(f"saved {image.path}")

    def show_image(self, image: Any) -> None:
        self.query_one("#image").image = image  # type: ignore[attr-defined]

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "generate" or event.state in (WorkerState.PENDING,
                                                               WorkerState.RUNNING):
            return
        self._frame()
        self.generating = False
        self.app.worker_state = "ready"
        status = self.query_one("#gen-status", Label)
        if event.state == WorkerState.SUCCESS:
            saved, cancelled, grid = event.worker.result
            status.update(f"{'cancelled: ' if cancelled else ''}{len(saved)} image(s) saved")
            if grid is not None:
                self.show_image(grid)
                self.query_one("#saved-path", Static).update(f"grid saved {grid}")
                self.notify(str(grid), title="Grid saved")
        else:
            exc = event.worker.error
            self.app.worker_state = "error"
            status.update(Text(f"✗ {exc}", "red"))

    # --- gallery -------------------------------------------------------------------------------

    def _selected(self) -> SavedImage | None:
        image = self.query_one("#gallery", Gallery).selected
        if image is None:
            self.notify("No images yet: ctrl+g generates.", severity="warning")
        return image

    def action_focus_gallery(self) -> None:
        self.query_one("#gallery", Gallery).focus()

    def action_rerun(self) -> None:
        image = self._selected()
        if image is not None:
            # The recorded request, every option included (the init image's stored copy too),
            # not the form.
            from sdtui.errors import BadInput
            from sdtui.metadata.reader import resolve_inputs

            try:
                recorded = resolve_inputs(image.params, image.path.parent, image.path)
            except BadInput as exc:
                self.notify(str(exc), severity="error")
                return
            params = {k: v for k, v in recorded.items()
                      if k in protocol.GENERATE_FIELDS and k not in ("id", "preview_every")}
            params.update(seed=image.seed, count=1, grid=False)
            self._fill(params)
            self.query_one("#lock-seed", Checkbox).value = True
            self.action_generate(params)

    def action_copy_prompt(self) -> None:
        image = self._selected()
        if image is not None:
            self._fill({**image.params, "seed": image.seed})
            self.query_one("#prompt", TextArea).focus()
            note = " The init image is not: r re-runs with it." if image.params.get(
                "init_image") else ""
            self.notify(f"Copied the prompt and parameters into the form.{note}")

    def action_show_path(self) -> None:
        image = self._selected()
        if image is not None:
            self.query_one("#saved-path", Static).update(f"saved {image.path}")
            self.show_image(image.path)
            self.notify(str(image.path), title="Saved at")

    def action_randomize_seed(self) -> None:
        self.query_one("#lock-seed", Checkbox).value = False
        self.query_one("#seed", Input).value = str(random.randint(0, protocol.MAX_SEED))

    # --- leaving ---------------------------------------------------------------------------------

    def action_teardown(self) -> None:
        if self.generating:
            self.notify("Generating: Escape cancels first.", severity="warning")
            return
        self.app.confirm_teardown(self.deployment)

    def action_back(self) -> None:
        if self.generating:
            self.notify("Generating: Escape cancels first.", severity="warning")
            return
        self.session.client.close()
        self.app.back_to_deployments()
