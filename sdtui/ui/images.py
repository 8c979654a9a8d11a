"""Which textual-image renderer shows images: Kitty or Sixel where the terminal supports them,
half-cell blocks elsewhere; SDTUI_IMAGE_PROTOCOL forces one.

textual-image probes the terminal when it is imported, and the probe only works before Textual
owns the terminal; the import also loads numpy (a third of a second). So it loads in a thread:
- auto: started first thing and joined before the app starts (the probe's waits for the
  terminal's answers overlap the app's own imports);
- forced: started after the first frame, and nothing is probed.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from types import ModuleType

from sdtui.errors import BadInput

ENV_VAR = "SDTUI_IMAGE_PROTOCOL"
WIDGET_OF = {
    "auto": "Image",
    "kitty": "TGPImage",
    "sixel": "SixelImage",
    "halfcell": "HalfcellImage",
    "unicode": "UnicodeImage",
}
PROTOCOLS = tuple(WIDGET_OF)


def image_protocol(value: str | None = None) -> str:
    name = (value if value is not None else os.environ.get(ENV_VAR, "")).strip().lower() or "auto"
    if name not in WIDGET_OF:
        raise BadInput(f"{ENV_VAR}={name!r} is not an image protocol",
                       fix=f"use one of {', '.join(PROTOCOLS)}")
    return name


@contextlib.contextmanager
def _no_answer(*args: object, **kwargs: object) -> Iterator[None]:
    raise TimeoutError("not asking the terminal: the image protocol is forced")
    yield  # pragma: no cover


@contextlib.contextmanager
def _without_probes() -> Iterator[None]:
    """Import textual-image without it writing queries to the terminal (Textual may own it by
    then): the cell size comes from the window size, and every query times out at once."""
    from textual_image import _terminal

    if not hasattr(_terminal.get_cell_size, "_result"):
        width = height = 0
        with contextlib.suppress(Exception):
            rows, columns, px_width, px_height = _terminal.get_tiocgwinsz()
            width, height = px_width // max(columns, 1), px_height // max(rows, 1)
        cell = _terminal.CellSize(width or 10, height or 20)  # the library's default: VT340
        _terminal.get_cell_size._result = cell  # type: ignore[attr-defined]
    real = _terminal.capture_terminal_response
    _terminal.capture_terminal_response = _no_answer  # type: ignore[assignment]
    try:
        yield
    finally:
        _terminal.capture_terminal_response = real


class ImageSupport:
    """textual-image, loaded once in the background; `widget_class()` waits for it."""

    def __init__(self, protocol: str | None = None) -> None:
        self.protocol = image_protocol(protocol)
        self._module: ModuleType | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, name="textual-image", daemon=True)

    def start(self) -> ImageSupport:
        if self._thread.ident is None:
            self._thread.start()
        return self

    def _load(self) -> None:
        try:
            if self.protocol == "auto":
                self._module = importlib.import_module("textual_image.widget")  # probes
            else:
                with _without_probes():
                    self._module = importlib.import_module("textual_image.widget")
        except BaseException as exc:  # re-raised where the widget is needed
            self._error = exc

    def before_app_runs(self) -> None:
        """Auto-detection talks to the terminal: it must be done before Textual starts."""
        if self.protocol == "auto":
            self._thread.join()

    def widget_class(self) -> type:
        if self._thread.ident is None:
            self._load()  # never started: load here
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._module is not None
        return getattr(self._module, WIDGET_OF[self.protocol])
