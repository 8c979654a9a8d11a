"""The keys of a screen, for the help screen and the command palette: the screen's own
bindings, those of sdtui's widgets on it (the gallery's r, c, d, ...) and the app's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.binding import Binding

# The same key on every screen that shows one deployment (prompt, provisioning, run).
TEARDOWN_BINDING = Binding("ctrl+t", "teardown", "Tear down",
                           tooltip="Tear this deployment down (shows what is deleted and kept)")


@dataclass(frozen=True)
class Key:
    key: str  # as shown (the app's key display: "ctrl+g", "f1")
    action: str  # the action it runs, relative to the screen ("rerun", not "screen.rerun")
    description: str
    where: str  # "screen", a widget's name, or "app"


def _bindings(owner: Any) -> list[Binding]:
    return [b for b in Binding.make_bindings(getattr(owner, "BINDINGS", []))]


def _sdtui_widgets(screen: Any) -> list[Any]:
    seen: dict[type, Any] = {}
    for widget in screen.query("*"):
        cls = type(widget)
        if cls.__module__.startswith("sdtui.") and "BINDINGS" in vars(cls):
            seen.setdefault(cls, widget)
    return list(seen.values())


def acting_bindings(widget: Any, screen: Any) -> list[Binding]:
    """A widget's bindings that do something on this screen: those that run the screen's
    actions ("screen.rerun") where the screen has that action."""
    return [b for b in _bindings(type(widget)) if not b.action.startswith("screen.")
            or hasattr(screen, f"action_{b.action.removeprefix('screen.').split('(')[0]}")]


def keys_of(app: Any, screen: Any) -> list[Key]:
    """Every binding that acts on `screen`, in the order a user meets them."""

    def key(binding: Binding, where: str) -> Key:
        action = binding.action.removeprefix("screen.")
        text = binding.tooltip or binding.description or action.replace("_", " ")
        return Key(app.get_key_display(binding), action, text, where)

    found = [key(b, "screen") for b in _bindings(type(screen))]
    for widget in _sdtui_widgets(screen):
        found += [key(b, type(widget).__name__.lower()) for b in acting_bindings(widget, screen)]
    found += [key(b, "app") for b in _bindings(type(app)) if not b.system]
    return found


def key_of_action(app: Any, screen: Any, action: str) -> str | None:
    """The first key that runs `action` on this screen (for the palette), if any."""
    for k in keys_of(app, screen):
        if k.action == action:
            return k.key
    return None
