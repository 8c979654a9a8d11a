"""What an Option B deployment is asked to be. No Docker here: forms and flags resolve these
before the engine is touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sdtui.docker_values import engine_url, image_name, volume_name
from sdtui.errors import BadSetting
from sdtui.ledger import validate_name
from sdtui.modelfiles import check_models, deployment_files

DEFAULT_NAME = "local"
DEFAULT_VOLUME = "sdtui-models"
DEFAULT_BASE_IMAGE = "python:3.11-slim"


@dataclass
class LocalSettings:
    models: list[Path] = field(default_factory=list)
    name: str = DEFAULT_NAME
    volume: str = DEFAULT_VOLUME
    base_image: str = DEFAULT_BASE_IMAGE
    docker_host: str | None = None

    def validate_values(self) -> None:
        """The name and the Docker values, as the config file checks them: enough to find
        what exists (status, teardown)."""
        validate_name(self.name)
        for setting, check in (("volume", volume_name), ("base_image", image_name),
                               ("docker_host", engine_url)):
            value = getattr(self, setting)
            if value is None:
                continue
            try:
                check(value)
            except ValueError as exc:
                raise BadSetting(setting, f"{setting.replace('_', ' ')}: {exc}",
                                 fix=f"fix the value of --{setting.replace('_', '-')}") from None

    def validate(self) -> None:
        """Everything that can be checked before anything is created."""
        self.validate_values()
        check_models(self.models)

    def files(self) -> list[tuple[Path, str]]:
        return deployment_files(self.models)
