"""The session's images with their parameters; re-run, copy the prompt back, show the path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.widgets import DataTable

if TYPE_CHECKING:
    from sdtui.session import SavedImage


class Gallery(DataTable[str]):
    BINDINGS = [
        Binding("r", "screen.rerun", "Re-run same seed"),
        Binding("c", "screen.copy_prompt", "Copy prompt"),
        Binding("o", "screen.show_path", "Show path"),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.images: list[SavedImage] = []

    def on_mount(self) -> None:
        self.add_columns("#", "seed", "size", "steps", "cfg", "scheduler", "prompt")

    def add_image(self, image: SavedImage) -> None:
        self.images.append(image)
        p = image.params
        self.add_row(
            str(len(self.images)), str(image.seed), f"{p.get('width')}×{p.get('height')}",
            str(p.get("steps")), f"{p.get('cfg', '')}", str(p.get("scheduler", "")),
            str(p.get("prompt", ""))[:60], key=str(image.path),
        )
        self.move_cursor(row=len(self.images) - 1)

    @property
    def selected(self) -> SavedImage | None:
        if not self.images:
            return None
        return self.images[min(self.cursor_row, len(self.images) - 1)]
