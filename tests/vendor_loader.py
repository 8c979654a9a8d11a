"""Vendored third-party files (tests/vendor/) imported with stand-ins for the modules of their
own projects that they import, which exist only while the file loads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_vendored(name: str, path: Path, stand_ins: dict[str, ModuleType]) -> ModuleType:
    """The file at `path` as module `name`; `sys.modules` is as it was afterwards."""
    saved = {module: sys.modules.get(module) for module in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for module, old in saved.items():
            if old is None:
                sys.modules.pop(module, None)
            else:
                sys.modules[module] = old
