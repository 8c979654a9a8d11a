"""What a scale-out deployment is asked to be, and the checks that run before any AWS call."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdtui.deploy.aws.settings import (
    DEFAULT_BASE_IMAGE,
    MIN_VOLUME_GB,
    check_bucket_name,
    resolve_region,
)
from sdtui.errors import BadInput
from sdtui.fetch.catalogue import CATALOGUE
from sdtui.fetch.named import ModelByName
from sdtui.fetch.refs import CatalogueRef, parse_ref
from sdtui.ledger import validate_name

# One GPU and 4 vCPUs each, so one shard per instance and 4·W vCPUs for W shards.
INSTANCE_TYPES = ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "g6e.xlarge")
MAX_GPUS = 256
DEFAULT_NAME = "batch"


@dataclass
class BatchSettings(ModelByName):
    bucket: str
    region: str | None = None
    name: str = DEFAULT_NAME
    # As given: local files (uploaded like Option A does), keys already in the bucket, or a
    # model to fetch into the bucket (hf:, civitai:, a catalogue name).
    models: list[str] = field(default_factory=list)
    # LoRAs to fetch (with a model to fetch) into the loras/ folder beside it in the bucket.
    lora_files: list[str] = field(default_factory=list)
    profile: str | None = None
    instance_type: str = "g4dn.xlarge"
    spot: bool = False
    gpus: int = 1
    volume_gb: int = 100
    base_image: str = DEFAULT_BASE_IMAGE
    dockerfile: str = "Dockerfile"  # tests: Dockerfile.local (SDTUI_TEST_DOCKERFILE)
    docker_host: str | None = None
    push: bool = True  # tests: False (SDTUI_TEST_ECR_PUSH=0), moto's ECR takes no push

    def validate_target(self) -> None:
        """Enough for --status, --cancel and --teardown."""
        validate_name(self.name)
        self.region = resolve_region(self.region, self.profile)

    def validate(self) -> None:
        """Everything a run needs that can be checked without AWS; raises BadInput."""
        self.validate_target()
        if not self.bucket:
            raise BadInput("no S3 bucket given for the model files",
                           fix="pass --bucket NAME (the bucket Option A uses, or a new name)")
        check_bucket_name(self.bucket)
        check_gpus(self.gpus)
        if self.instance_type not in INSTANCE_TYPES:
            raise BadInput(f"instance type {self.instance_type!r} cannot run one shard per GPU",
                           fix=f"pass --instance-type from {', '.join(INSTANCE_TYPES)}")
        if self.volume_gb < MIN_VOLUME_GB:
            raise BadInput(f"a {self.volume_gb} GB root volume is too small",
                           fix=f"pass {MIN_VOLUME_GB} GB or more")
        if not self.models:
            raise BadInput("no model given",
                           fix="pass --model with a file here, a key in the bucket (e.g. "
                           "sd-v1-4.ckpt) or a name to fetch (sdtui --list-models)")
        self.check_lora_files("the scale-out")

    def names_a_fetch(self, text: str) -> bool:
        """hf:, civitai:, their URLs and the catalogue's names; any other bare name is a key in
        the bucket (a folder key named like a catalogue entry: write it with a trailing /)."""
        ref = parse_ref(text)
        return ref is not None and (not isinstance(ref, CatalogueRef) or ref.name in CATALOGUE)


def check_gpus(gpus: int, field: str | None = None) -> None:
    """`field`: the form field the count was typed in, named instead of the flag."""
    if not 1 <= gpus <= MAX_GPUS:
        if field:
            raise BadInput(f"{gpus} GPUs is out of range", fix=f"enter 1 to {MAX_GPUS} in {field}")
        raise BadInput(f"--gpus {gpus} is out of range", fix=f"pass 1 to {MAX_GPUS}")
