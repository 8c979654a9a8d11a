"""What an Option B deployment is asked to be. No Docker here: forms and flags resolve these
before the engine is touched. A model named to fetch (sdtui.fetch) is resolved here too, so a
bad name is refused before anything is created."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sdtui.deploy.kept_model import recorded_gone
from sdtui.docker_values import engine_url, image_name, volume_name
from sdtui.errors import BadSetting
from sdtui.fetch.named import ModelByName
from sdtui.fetch.store import Store
from sdtui.ledger import validate_name
from sdtui.loras import LORA_DIR
from sdtui.modelfiles import check_extras, check_models, companion_files, deployment_files
from sdtui.paths import models_dir

DEFAULT_NAME = "local"
DEFAULT_VOLUME = "sdtui-models"  # the volume of deployments made before it carried their name
DEFAULT_BASE_IMAGE = "python:3.11-slim"


def default_volume(name: str) -> str:
    return DEFAULT_VOLUME if name == DEFAULT_NAME else f"sdtui-{name}-models"


@dataclass
class LocalSettings(ModelByName):
    models: list[Path | str] = field(default_factory=list)
    name: str = DEFAULT_NAME
    volume: str = ""  # empty: default_volume(name)
    base_image: str = DEFAULT_BASE_IMAGE
    docker_host: str | None = None
    lora_files: list[str] = field(default_factory=list)  # LoRAs to fetch into loras/

    def fill_in(self) -> None:
        """What the layers left open and follows from the rest: the volume, named after the
        deployment so that two deployments (or two state dirs on one engine) never share it
        by default."""
        self.volume = self.volume or default_volume(self.name)

    def validate_values(self) -> None:
        """The name and the Docker values, as the config file checks them: enough to find
        what exists (status, teardown)."""
        validate_name(self.name)
        self.fill_in()
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
        if self.fetched_model() is None and not self.model_kept():
            check_models(self.models)
        else:
            check_extras(self.models[1:])
        self.fetched_loras()

    def model_kept(self) -> bool:
        """The model file is gone from this machine, yet this deployment's ledger records
        giving that very path to the worker container it created: the copy in the volume serves
        a run that needs no upload (the deployment checks its worker still holds it)."""
        ledger = recorded_gone(self.name, "local", self.models)
        return ledger is not None and bool(ledger.resources("container"))

    @property
    def store(self) -> Store:
        return Store(models_dir())

    def local_models(self) -> list[Path]:
        """The model files as this machine holds them (a fetched one in the store)."""
        resolved = self.fetched_model()
        first = self.store.model_path(resolved) if resolved else Path(self.models[0])
        return [first, *(Path(m) for m in self.models[1:])]

    def files(self) -> list[tuple[Path, str]]:
        """What the volume receives; a fetched LoRA lands in loras/ under its file's name."""
        fetched = [(self.store.model_path(r), f"{LORA_DIR}/{Path(r.model).name}")
                   for r in self.fetched_loras()]
        models = self.local_models()
        ours = companion_files(models) if self.model_kept() else deployment_files(models)
        return ours + fetched
