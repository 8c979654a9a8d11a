"""The stand-ins, and this process pointed at them the way a user's environment would be
(HF_ENDPOINT, CIVITAI_ENDPOINT, the tokens, SDTUI_MODELS_DIR)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from tests.fetch.standin import Hub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    hub = Hub()
    # huggingface_hub reads HF_ENDPOINT when it is imported: a subprocess gets the variable,
    # this process the constant.
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    for name, value in hub_env(hub, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("CIVITAI_API_TOKEN", raising=False)
    yield hub
    hub.close()


def hub_env(hub: Hub, root: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "CIVITAI_ENDPOINT": hub.url, "HF_HOME": str(root / "hf-home"),
            "SDTUI_MODELS_DIR": str(root / "models"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def clean_env(hub: Hub, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "CIVITAI_API_TOKEN")}
    return {**env, **hub_env(hub, root)}


def checkpoint_files(model: Path, path: str) -> dict[str, Path]:
    """A tiny single-file model as a repo holds it at `path`: the file, and the `STEM.config/`
    folder sdtui reads beside it."""
    stem = path.removesuffix(Path(path).suffix)
    sidecar = model.with_name(model.stem + ".config")
    return {path: model, **{f"{stem}.config/{p.relative_to(sidecar).as_posix()}": p
                            for p in sidecar.rglob("*") if p.is_file()}}
