"""Where sdtui keeps its state, its config and the user's images.

Each location follows the platform's conventions (platformdirs) and can be overridden with an
environment variable, which is how tests and scripts keep sdtui away from the real home dir.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import platformdirs

APP_NAME = "sdtui"


def _override(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def state_dir() -> Path:
    """Ledgers of deployments (SDTUI_STATE_DIR overrides)."""
    return _override("SDTUI_STATE_DIR") or Path(platformdirs.user_state_dir(APP_NAME))


def state_dir_id() -> str:
    """Six hex digits that name this machine and this state dir together. Default deployment
    names carry them, so two clients with their own state dirs on one Docker engine (or one
    AWS account) never default to the same name. Computed, not stored: `--status` writes
    nothing, and the id stays the same for as long as the state dir stays where it is."""
    machine = ""
    for source in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine = Path(source).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if machine:
            break
    seed = f"{machine}\0{socket.gethostname()}\0{state_dir().absolute()}"
    return hashlib.sha256(seed.encode()).hexdigest()[:6]


def models_dir() -> Path:
    """Fetched model files, verified (SDTUI_MODELS_DIR overrides)."""
    return _override("SDTUI_MODELS_DIR") or Path(platformdirs.user_cache_dir(APP_NAME)) / "models"


def config_dir() -> Path:
    """Where config.toml lives (SDTUI_CONFIG_DIR overrides)."""
    return _override("SDTUI_CONFIG_DIR") or Path(platformdirs.user_config_dir(APP_NAME))


def default_outputs_dir() -> Path:
    """The user's pictures dir / sdtui, or the data dir when there is no pictures dir
    (SDTUI_OUTPUTS_DIR overrides)."""
    override = _override("SDTUI_OUTPUTS_DIR")
    if override:
        return override
    pictures = Path(platformdirs.user_pictures_dir())
    if pictures.is_dir():
        return pictures / APP_NAME
    return Path(platformdirs.user_data_dir(APP_NAME)) / "outputs"
