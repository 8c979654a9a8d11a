"""A scale-out run live: each shard's state and images, the cost so far, and the gallery filling
as the images land in the outputs dir. Leaving stops watching, not the run; Ctrl-X cancels it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from sdtui.catalog import CatalogImage
from sdtui.errors import SdtuiError
from sdtui.ui.keys import TEARDOWN_BINDING
from sdtui.ui.widgets.gallery import Gallery
from sdtui.ui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from sdtui.deploy.batch.runs import Collected, RunStatus
    from sdtui.ui.host import SdtuiHost


def saved_image(image: Collected) -> CatalogImage:
    """A downloaded image as the gallery lists it (the gallery also lists the outputs dir)."""
    return CatalogImage(image.path, image.record["params"], str(image.record.get("time", "")))


class RunScreen(Screen[None]):
    HELP_TITLE = "scale-out run"
    BINDINGS = [
        Binding("ctrl+x", "cancel_run", "Cancel run",
                tooltip="Stop every shard of the run; the images already made are kept"),
        Binding("ctrl+b", "back", "Back (the run goes on)",
                tooltip="Back to the deployments; the run goes on in AWS (Resume watches it)"),
        Binding("escape", "back", "Back", show=False,
                tooltip="The same: back to the deployments, the run goes on"),
        TEARDOWN_BINDING,
    ]
    PALETTE = [
        ("Cancel the run", "Stop every shard; finished images are kept", "cancel_run"),
        ("Back to deployments", "Stop watching; the run goes on in AWS", "back"),
        ("Tear down this deployment", "Show what will be deleted, then delete it", "teardown"),
    ]

    app: SdtuiHost

    def __init__(self, deployment: Any, *, lines: list[dict[str, Any]] | None = None,
                 record: dict[str, Any] | None = None, out_dir: Path | None = None) -> None:
        super().__init__()
        self.deployment = deployment
        self.lines = lines
        self.record = record
        self.out_dir = out_dir
        self.stop = threading.Event()
        self.status: RunStatus | None = None
        self.title = f"sdtui — scale-out {deployment.name}"

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="run-body"):
            yield Static("submitting…", id="run-summary")
            yield Label("Shards", classes="section")
            yield DataTable(id="shards", cursor_type="row", zebra_stripes=True)
            yield Label("Images", classes="section")
            yield Gallery(id="gallery")
            yield Static("", id="saved-path")
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#shards", DataTable).add_columns("shard", "state", "images", "attempts",
                                                         "reason")
        self.app.worker_state = "running"  # submitting: the run is about to cost money
        self._watch()

    def on_unmount(self) -> None:
        self.stop.set()

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _watch(self) -> None:
        try:
            if self.record is None and self.lines is not None:
                self.record = self.deployment.submit(self.lines, self.out_dir)
            elif self.record is None:
                self.record = self.deployment.run_record(None)
            record = self.record
            self.app.call_from_thread(self._submitted, record)
            self.deployment.watch(
                record, lambda image: self.app.call_from_thread(self._image, image),
                lambda status: self.app.call_from_thread(self._progress, status), self.stop,
                self.out_dir)
        except SdtuiError as exc:
            self.app.call_from_thread(self._failed, exc)
        except Exception as exc:  # an AWS error the core did not expect: shown, not raised
            self.app.call_from_thread(self._failed, SdtuiError(f"{type(exc).__name__}: {exc}"))

    def _submitted(self, record: dict[str, Any]) -> None:
        self.refresh_bindings()
        self.title = f"sdtui — run {record['run']} on {record['shards']} GPU(s)"
        self.query_one("#run-summary", Static).update(
            f"run {record['run']}: {sum(record['counts'])} image(s) on {record['shards']} "
            "GPU(s); waiting for the instances…")

    def _image(self, image: Collected) -> None:
        self.query_one(Gallery).add_image(saved_image(image))
        self.refresh_bindings()

    def _progress(self, status: RunStatus) -> None:
        self.status = status
        style = {"succeeded": "green", "failed": "bold red", "cancelled": "yellow"}.get(
            status.state, "")
        self.query_one("#run-summary", Static).update(Text(
            f"run {status.run}: {status.state}, {status.done}/{status.total} images, "
            f"≈${status.cost_so_far_usd:.2f} so far", style))
        table = self.query_one("#shards", DataTable)
        table.clear()
        for shard in status.shards:
            table.add_row(str(shard.index), shard.status.lower(), f"{shard.done}/{shard.total}",
                          str(shard.attempts), shard.reason[:60])
        # "running" while the run goes on: quitting then says what keeps costing
        self.app.worker_state = f"run {status.state}" if status.finished else "running"
        self.refresh_bindings()

    def _failed(self, exc: SdtuiError) -> None:
        text = Text(f"✗ {exc.message}", "bold red")
        if exc.fix:
            text.append(f"\n  fix: {exc.fix}", "yellow")
        self.query_one("#run-summary", Static).update(text)
        self.app.worker_state = "failed"

    # --- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the keys that act now (the gallery here opens and copies; re-run and delete
        are the prompt panel's)."""
        if action == "cancel_run":
            return self.record is not None and not (self.status and self.status.finished)
        if action in ("open_image", "copy_prompt"):
            return bool(self.query("#gallery")) and bool(self.query_one(Gallery).images)
        return True

    def action_cancel_run(self) -> None:
        if self.record is None or (self.status is not None and self.status.finished):
            self.notify("There is no running run to cancel.", severity="warning")
            return
        self._cancel(self.record)

    @work(thread=True, exclusive=True, group="run-cancel", exit_on_error=False)
    def _cancel(self, record: dict[str, Any]) -> None:
        try:
            told = self.deployment.cancel(record)
        except SdtuiError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.notify, f"cancelled run {record['run']}: {len(told)} "
                                  "shard(s) told to stop; finished images are kept")

    def action_back(self) -> None:
        self.stop.set()
        if self.status is None or not self.status.finished:
            self.notify("The run goes on in AWS; resume the deployment to watch it again.")
        self.app.back_to_deployments()

    def action_teardown(self) -> None:
        self.app.confirm_teardown(self.deployment)

    # the gallery's keys
    def action_show_path(self) -> None:
        image = self.query_one(Gallery).selected
        if image is not None:
            self.query_one("#saved-path", Static).update(f"saved {image.path}")
            self.notify(str(image.path), title="Saved at")

    def action_open_image(self) -> None:
        from sdtui.ui.viewer import open_and_tell

        image = self.query_one(Gallery).selected
        if image is not None:
            open_and_tell(self, image.path)

    def action_copy_prompt(self) -> None:
        image = self.query_one(Gallery).selected
        if image is not None:
            self.app.copy_to_clipboard(str(image.params.get("prompt", "")))
            self.notify("Copied the prompt to the clipboard.")
