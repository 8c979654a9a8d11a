"""The deployment's images, newest last, with the columns that tell them apart; selecting a row
shows that image. Keys: open in the system viewer, re-run, copy the prompt, delete."""

from __future__ import annotations

import re
from typing import Any

from textual import events
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from sdtui.catalog import CatalogImage

LORA = re.compile(r"<lora:([^:>]+)(?::([-0-9.]+))?>")
COLUMNS = ("#", "time", "seed", "variation", "init", "mask", "LoRA", "upscale", "faces", "size",
           "steps", "cfg", "sampler", "prompt")


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def row_of(number: int, image: CatalogImage) -> tuple[str, ...]:
    """What tells one image from another: seeds, img2img, mask, LoRA, postprocessing, time."""
    p = image.params
    variation = "-"
    if p.get("variation_amount"):
        variation = f"{_num(p['variation_amount'])}→{p.get('variation_seed', '?')}"
    init = "-"
    if p.get("init_image") or p.get("init_image_sha256"):
        init = f"{_num(p.get('strength'))} {p.get('fit', '')}".strip()
    loras = ", ".join(f"{name}:{weight or '1'}" for name, weight in
                      LORA.findall(str(p.get("prompt", "")))) or "-"
    upscale = f"×{p['upscale']} {_num(p.get('upscale_strength'))}" if p.get("upscale") else "-"
    faces = _num(p["gfpgan"]) if p.get("gfpgan") else "-"
    when = image.time[11:19] if len(image.time) >= 19 else image.time
    return (str(number), when, str(image.seed if image.seed is not None else "-"), variation,
            init, "yes" if p.get("mask") else "-", loras, upscale, faces,
            f"{p.get('width', '?')}×{p.get('height', '?')}", _num(p.get("steps")),
            _num(p.get("cfg")), str(p.get("scheduler", "")), str(p.get("prompt", ""))[:60])


def _sampler(p: dict[str, Any]) -> str:
    from sdtui import samplers

    sampler, schedule = str(p.get("scheduler", "")), str(p.get("schedule") or "")
    try:
        shown = samplers.a1111_label(sampler)
    except KeyError:
        shown = sampler
    if schedule and schedule != samplers.DEFAULT_SCHEDULE:
        shown += f", {samplers.SCHEDULE_A1111.get(schedule, schedule)}"
    return shown


def describe(image: CatalogImage) -> str:
    """The line under an image: where it is, its prompt, and the parameters that shaped it
    (img2img, mask, faces, upscale and variation only when they were used)."""
    p = image.params
    parts = [f"{p.get('width', '?')}×{p.get('height', '?')}", f"{_num(p.get('steps'))} steps",
             f"cfg {_num(p.get('cfg'))}", _sampler(p), f"seed {image.seed}"]
    if p.get("negative_prompt"):
        parts.append(f"not: {p['negative_prompt']}")
    if p.get("init_image") or p.get("init_image_sha256"):
        parts.append(f"img2img strength {_num(p.get('strength'))} ({p.get('fit', 'resize')})")
    if p.get("mask"):
        parts.append("inpainted with a mask")
    if p.get("variation_amount"):
        parts.append(f"variation {_num(p['variation_amount'])} → seed "
                     f"{p.get('variation_seed', '?')}")
    if p.get("gfpgan"):
        parts.append(f"faces {_num(p['gfpgan'])}")
    if p.get("upscale"):
        parts.append(f"upscale ×{p['upscale']} (mix {_num(p.get('upscale_strength'))})")
    return f"saved {image.path}\n{p.get('prompt', '')}\n" + " · ".join(
        part for part in parts if part)


class Gallery(DataTable[str]):
    BINDINGS = [
        Binding("o", "screen.open_image", "Open",
                tooltip="Open the selected image in the system's image viewer"),
        Binding("r", "screen.rerun", "Re-run",
                tooltip="Generate the selected image again: same seed, same parameters"),
        Binding("c", "screen.copy_prompt", "Copy prompt",
                tooltip="Put the selected image's prompt and parameters in the form (and the "
                "prompt on the clipboard)"),
        Binding("d", "screen.delete_image", "Delete",
                tooltip="Delete the selected image: its file and its index line (asks first)"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.images: list[CatalogImage] = []

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def on_resize(self, event: events.Resize) -> None:
        # The caption above wraps onto more lines once a new image is shown, so the table
        # shrinks after its cursor was scrolled into view; the selected row must stay in sight.
        if self.images:
            self.call_after_refresh(self._cursor_in_sight)

    def _cursor_in_sight(self) -> None:
        # The row the cursor is on after the refresh, not at the resize: a key typed meanwhile
        # (up, down) has moved it, and moving it back would show the image it left.
        self.move_cursor(row=self.cursor_row)

    def load(self, images: list[CatalogImage]) -> None:
        self.clear()
        self.images = []
        for image in images:
            self.add_image(image, select=False)
        if self.images:
            self.move_cursor(row=len(self.images) - 1)

    def add_image(self, image: CatalogImage, select: bool = True) -> None:
        if self.rows.get(RowKey(str(image.path))) is not None:
            return  # already shown: our own image, also found in the index
        self.images.append(image)
        self.add_row(*row_of(len(self.images), image), key=str(image.path))
        if select:
            self.move_cursor(row=len(self.images) - 1)

    def remove_image(self, image: CatalogImage) -> None:
        index = self.images.index(image)
        self.images.pop(index)
        self.remove_row(str(image.path))
        for number, other in enumerate(self.images[index:], start=index + 1):
            self.update_cell(str(other.path), self.ordered_columns[0].key, str(number))

    @property
    def selected(self) -> CatalogImage | None:
        if not self.images:
            return None
        return self.images[min(self.cursor_row, len(self.images) - 1)]
