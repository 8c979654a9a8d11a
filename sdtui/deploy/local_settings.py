"""What an Option B deployment is asked to be. No Docker here: forms and flags resolve these
before the engine is touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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

    def validate(self) -> None:
        """Everything that can be checked before anything is created."""
        validate_name(self.name)
        check_models(self.models)

    def files(self) -> list[tuple[Path, str]]:
        return deployment_files(self.models)
